"""The model tables as the indexer declares them (`flows.indexer`), for benchmarks that load rows
straight into a database: the columns come from the indexer's own schemas, so a column added there
is here too and the search SQL the benchmarks time reads what it reads in use."""

from __future__ import annotations

import asyncio
from typing import Any

from core.store.db import INLINE_ROWS
from core.store.model_state import frames_table, model_table
from flows.tables import frames_schema, images_schema


def _create(table: str, schema: Any) -> str:
    # every column but the key nullable: a benchmark fills only what its queries read
    columns = [f"{name} {column.type}" for name, column in schema.columns.items()]
    key = ", ".join(schema.primary_key)
    return f"CREATE TABLE {table} ({', '.join(columns)}, PRIMARY KEY ({key})) WITH ({INLINE_ROWS})"


def model_tables_sql(model: str, dim: int) -> tuple[str, str]:
    """CREATE TABLE statements for `model`'s table and its video frames' table."""

    async def schemas() -> tuple[Any, Any]:
        return await images_schema(dim), await frames_schema(dim)

    images, frames = asyncio.run(schemas())
    return _create(model_table(model), images), _create(frames_table(model), frames)
