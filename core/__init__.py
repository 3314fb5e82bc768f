"""What the indexer and the server share: settings, errors, the database, models and pictures."""
