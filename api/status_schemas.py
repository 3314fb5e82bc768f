"""The documented shape of what the server says of itself: `/api/status` and `/api/model`
(see `api.schemas` for the rest of the HTTP API)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelFacts(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    images: int | None


class Build(BaseModel):
    name: str
    done: int
    total: int
    switch_requested: bool
    error: str | None = Field(None, description="why this server cannot load it, if it cannot")


class Models(BaseModel):
    active: ModelFacts
    building: Build | None
    configured: str = Field(description="CLIP_MODEL as this server read it")


class Progress(BaseModel):
    done: int
    total: int


class Failure(BaseModel):
    path: str
    reason: str


class FolderInfo(BaseModel):
    label: str = Field(description='its top folder in paths; "" when IMAGE_DIR names one folder')
    path: str
    watch: str = Field(description="live (file events) or polled (rescanned every SCAN_INTERVAL)")
    files: int = Field(description="pictures and videos found, paired files included")
    sidecars: int = Field(description="known companions never indexed: .xmp, .aae, Thumbs.db, ...")
    skipped: dict[str, int] = Field(description='other files by extension, e.g. {".pdf": 3}')


class MediaCounts(BaseModel):
    pictures: int
    videos: int
    live_photos: int
    raw_originals: int


class TextProgress(BaseModel):
    """The text in pictures (OCR), counted by content: copies of a picture count once."""

    mode: str = Field(description="OCR as this server reads it: auto, on or off")
    read: int = Field(description="pictures whose text is stored (an empty text included)")
    waiting: int = Field(description="pictures the OCR pass has not read yet")
    skipped: int = Field(description="pictures OCR=auto left out (too small), or that could not be decoded")


class FacesProgress(BaseModel):
    """Finding faces, counted by content: copies of a picture count once."""

    mode: str = Field(description="FACES as this server reads it: on or off")
    read: int = Field(description="pictures and videos whose faces are stored (none found included)")
    waiting: int = Field(description="pictures and videos the faces pass has not looked at yet")
    failed: int = Field(description="pictures and videos that could not be read for faces")


class Status(BaseModel):
    database: str = Field(description='"ok", or "unreachable: <why>"')
    images: int | None
    failed: list[Failure]
    model: str
    models: Models
    device: str | None
    precision: str | None = Field(description="what pictures are embedded in: int8, float32, bfloat16, float16")
    cpu: str | None = Field(default=None, description="the instruction sets of the indexer's CPU that chose it")
    live: bool
    scanning: bool
    last_change_at: str | None
    pending: int
    progress: Progress | None
    throughput: float
    indexer_started_at: str | None
    heartbeat_at: str | None
    image_dir: str
    folders: list[FolderInfo] = Field(description="each IMAGE_DIR folder, as the indexer last scanned it")
    media: MediaCounts | None
    text: TextProgress | None = Field(None, description="reading the text in pictures, after their embeddings")
    faces: FacesProgress | None = Field(None, description="finding faces, after the embeddings and the text")
    embedded: int | None = Field(
        None, description="images that went through the model since the indexer in this server started"
    )
    reused: int | None = Field(None, description="images whose embedding came from the cache since then")
    waiting: str | None = Field(
        None, description="why the indexer in this server is waiting (the database away, a disk full), if it is"
    )
    model_error: str | None = None
    text_tower: str | None = Field(
        None,
        description='how this server embeds queries: "compiled (int8)", "compiled (float32)" or "transformers"; '
        "absent before its model has loaded",
    )
    replica: bool = Field(False, description="the database is a streaming replica (searches only; changes refused)")
    replication_lag: float | None = Field(
        None,
        description="on a replica, seconds its data may trail the primary: 0 while it streams and has applied "
        "all it received, else the age of the last change it applied",
    )
