"""What the indexer (`flows`) and the server (`api`) share, by concern, each package importing only
those below it:

- `core.store`: the database, its server and its tables;
- `core.models`: the embedding model, the compiled text tower and OCR;
- `core.media`: opening pictures and videos and reading their metadata;
- at the top, imported by all: `settings` (the one settings object), `errors` (the one error
  hierarchy for what users can cause), `threads` (how many compute threads a task gets) and
  `privacy` (the libraries' own usage reports, off).
"""
