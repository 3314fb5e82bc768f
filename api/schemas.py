"""What the HTTP API takes and gives: request bodies, and the documented shape of every answer.

Routes return plain dicts (built once, by the code that knows the facts); the response models here
describe them in `/openapi.json`, and the schemathesis run in the test suite checks that the
answers match what is written here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from api.bounds import MAX_DATE, MAX_FOLDER, MAX_FORMAT, MAX_PLACE, MAX_TEXT, MAX_WEIGHT, MAX_WORD, MIN_WEIGHT
from api.search import MAX_LIMIT, MAX_OFFSET

QUERY_HELP = (
    "what to look for, in plain language, or in the query language: terms joined by + and -, "
    "weights (2:sunset), quoted phrases, img:ID, in:FOLDER, dates (2023, July 2023, last summer), "
    "places of the collection (Lisbon, beach in New York), "
    'text:"WORDS" (only pictures whose names, keywords or text in them hold the words) and -text:WORDS'
)

WEIGHT_HELP = f"{MIN_WEIGHT:g} to {MAX_WEIGHT:g} in size, never 0 (only the ratios of weights matter)"

# query parameters of every route that answers with a page of results
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="results per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="results to skip")]


def one_of(*words: str) -> dict[str, Any]:
    """The words a parameter takes, as its schema's enum ("" and null: the default; the API also
    reads them in capitals, and with spaces around)."""
    return {"enum": [*words, "", None]}


LEVEL_HELP = "drop results judged below this level: strong, weak or none (see `match` in results)"
SORT_HELP = "relevance (the default), or date: every match at min_match or above (strong unless said) by date"
ORDER_HELP = "with sort=date: newest (the default) or oldest first"
LEVELS, SORTS, ORDERS = one_of("strong", "weak", "none"), one_of("relevance", "date"), one_of("newest", "oldest")
MinMatch = Annotated[str | None, Query(max_length=MAX_WORD, description=LEVEL_HELP, json_schema_extra=LEVELS)]
Sort = Annotated[str | None, Query(max_length=MAX_WORD, description=SORT_HELP, json_schema_extra=SORTS)]
Order = Annotated[str | None, Query(max_length=MAX_WORD, description=ORDER_HELP, json_schema_extra=ORDERS)]


# Request bodies are strict: a JSON `true` is no number and "1" no integer, as their schemas say.


class TextTerm(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="words for the model, taken literally")
    weight: float = Field(
        1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False, description=WEIGHT_HELP + "; negative to steer away"
    )


class ImageTerm(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    image_id: int = Field(ge=0, lt=2**63, description="an indexed image's id")
    weight: float = Field(
        1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False, description=WEIGHT_HELP + "; negative for less like it"
    )


class StructuredSearch(BaseModel):
    """A query as terms instead of `q`: the search vector is the normalised weighted sum of the
    terms' embeddings; filters work as in `GET /api/search` (no dates or folders are read from texts)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "terms": [{"text": "sunset", "weight": 2}, {"text": "people", "weight": -1}],
                    "taken_after": "2023-01-01",
                    "min_match": "weak",
                }
            ]
        },
    )
    terms: list[TextTerm | ImageTerm] = Field(min_length=1, max_length=20)
    limit: int = Field(40, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    folder: str | None = Field(None, max_length=MAX_FOLDER, description="only this subfolder of IMAGE_DIR")
    taken_after: str | None = Field(None, max_length=MAX_DATE, description="ISO date, inclusive")
    taken_before: str | None = Field(None, max_length=MAX_DATE, description="ISO date, inclusive")
    format: str | None = Field(None, max_length=MAX_FORMAT, description="jpeg, png, webp, gif, bmp, tiff")
    place: str | None = Field(None, max_length=MAX_PLACE, description="a place name, as GET /api/places lists them")
    min_match: str | None = Field(None, max_length=MAX_WORD, description=LEVEL_HELP, json_schema_extra=LEVELS)
    sort: str | None = Field(None, max_length=MAX_WORD, description=SORT_HELP, json_schema_extra=SORTS)
    order: str | None = Field(None, max_length=MAX_WORD, description=ORDER_HELP, json_schema_extra=ORDERS)


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())
    model: str = Field(
        min_length=1, max_length=500, description="a Hugging Face model id, or a folder holding a checkpoint"
    )
    switch_now: bool = Field(
        False, description="switch searches to it as soon as possible, before it covers the collection"
    )


# ---- answers ----


class Error(BaseModel):
    """Every error: one line that says what is wrong and what to do."""

    detail: str


class QueryErrorBody(Error):
    """A query that cannot be read, or any other invalid request."""

    position: int | None = Field(None, description="where in q the problem is (characters from 0)")
    expected: str | None = Field(None, description="what the query language expected there")
    errors: list[dict[str, Any]] | None = Field(
        None, description="each invalid field, for a request that fails validation"
    )


class PlaceOfImage(BaseModel):
    locality: str | None = Field(description="the nearest populated place, when it is not the city (Alfama)")
    city: str = Field(description="the city the position belongs to (Lisbon)")
    region: str | None = Field(description="the first-level division: a state, a province (Lisbon, Tokyo, Texas)")
    country: str
    country_code: str = Field(description="ISO 3166-1 alpha-2")
    label: str = Field(description='all of it in one line: "Alfama, Lisbon, Portugal"')


class FaceInPicture(BaseModel):
    face_id: int
    person_id: int | None = Field(description="null: a face too small or unclear to be grouped")
    name: str | None
    box: list[float] = Field(description="[x0, y0, x1, y1], fractions of the picture as displayed")


class Image(BaseModel):
    id: int
    path: str = Field(description="relative to IMAGE_DIR (with several folders, under its folder's label)")
    kind: str = Field(description="picture, live (a Live Photo: a still with motion) or video")
    score: float | None = Field(description="cosine similarity to the query; null when browsing by date")
    width: int
    height: int
    size: int = Field(description="bytes")
    format: str
    taken_at: str | None = Field(
        description="EXIF date taken (a video's creation date; else an XMP sidecar's or a Google Takeout JSON's, "
        "in UTC), else the file's modification time"
    )
    date_source: str = Field(
        description="exif (a picture's date, its own or a sidecar's), created (a video's) or modified"
    )
    camera: str | None
    latitude: float | None = Field(description="GPS, decimal degrees (EXIF, XMP, QuickTime or a Google Takeout JSON)")
    longitude: float | None
    place: PlaceOfImage | None = Field(description="where the GPS position is, from an offline gazetteer")
    keywords: list[str] = Field(
        description="XMP/IPTC keywords, embedded or from an .xmp sidecar, and the people a Google Takeout JSON names"
    )
    title: str | None
    description: str | None
    rating: int | None = Field(description="XMP rating, -1 (rejected) to 5")
    duration: float | None = Field(description="a video's length in seconds")
    second: float | None = Field(description="a video found by a search: the second of the frame that matched")
    url: str = Field(description="the file; videos support range requests")
    thumbnail_url: str = Field(description="a JPEG; for a video, of the matched frame")
    preview_url: str | None = Field(description="a JPEG to show a format browsers cannot (HEIC, RAW, ...)")
    original_url: str | None = Field(description="the RAW file a JPEG or HEIC came with")
    motion_url: str | None = Field(description="a Live Photo's motion (a short video)")
    play_url: str | None = Field(
        description="a video (or a Live Photo's motion) as every browser plays it: the file itself where its "
        "codecs allow, else H.264/AAC in MP4 made from it on demand; ask `{play_url}/status` whether it is ready"
    )
    people: list[FaceInPicture] = Field(description="the faces in it (a video: in the frame shown), with who they are")


class VideoPlayback(BaseModel):
    state: str = Field(description="ready: play `url`; preparing: being converted for browsers, ask again")
    url: str = Field(description="what to play (range requests supported)")
    converted: bool = Field(description="true: `url` gives H.264/AAC in MP4 made from the file")
    codec: str = Field(description="the file's video codec: h264, hevc, vp9, ...")
    progress: float | None = Field(description="while preparing: the fraction done, 0 to 1")


class MatchedLine(BaseModel):
    text: str
    box: list[float] = Field(description="[x0, y0, x1, y1], fractions of the picture as displayed")


class TextMatch(BaseModel):
    words: list[str] = Field(description="the query's words the picture's own words hold, cut as search cuts them")
    where: list[str] = Field(description="where they are: name, keywords, title, description, ocr")
    lines: list[MatchedLine] = Field(description="the lines of text read in the picture that hold them")


class Result(Image):
    match: str = Field(description="strong, weak or none: how well the query describes the image (text: strong)")
    relevance: float | None = Field(description="the margin behind `match`; null when browsing by date or by text")
    text_match: TextMatch | None = Field(
        None, description="for a result found through its own words (names, keywords, text in it): which and where"
    )


class Person(BaseModel):
    id: int
    name: str | None
    faces: int
    pictures: int
    hidden: bool
    cover_url: str | None = Field(description="a crop of the person's clearest face")


class PeoplePage(BaseModel):
    people: list[Person]


class PersonItem(BaseModel):
    face_id: int = Field(description="the face, for PATCH /api/faces/{face_id} and its thumbnail")
    image_id: int
    path: str
    box: list[float]


class PersonPage(Person):
    items: list[PersonItem] = Field(description="every picture of the person, one entry per face")


class PersonChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, max_length=1000, description="the person's name (1 to 100 characters)")
    hidden: bool | None = Field(None, description="hide a person (strangers in the background) or show them again")


class Merge(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    into: int = Field(ge=0, lt=2**63, description="the person who remains")


class FaceChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    person_id: int | None = Field(None, ge=0, lt=2**63, description="the face's person; null: a new person of its own")
    not_a_face: bool = Field(False, description="true: what was found is no face")


class FaceChanged(BaseModel):
    face_id: int
    person_id: int | None
    not_a_face: bool
    box: list[float]


class Understood(BaseModel):
    text: str
    terms: list[dict[str, Any]]
    filters: dict[str, Any]


class SortOrder(BaseModel):
    by: str = Field(description="relevance or date")
    order: str | None = Field(None, description="with date: newest or oldest")


class SearchPage(BaseModel):
    query: Any = Field(description="the question, as asked")
    understood: Understood | None = Field(None, description="how the query was read (not for similar)")
    sort: SortOrder
    results: list[Result]
    limit: int
    offset: int
    has_more: bool


class Folder(BaseModel):
    path: str
    images: int


class Folders(BaseModel):
    folders: list[Folder]


class PlaceName(BaseModel):
    name: str = Field(description="as the collection spells it; what place= and the query language take")
    kind: str = Field(description="the broadest it is: country, region, city or locality")
    countries: list[str] = Field(description="the countries it lies in, most images first")
    images: int = Field(description="images taken there: what place= with this name finds")


class Places(BaseModel):
    places: list[PlaceName]


class DuplicateImage(Image):
    similarity: float


class DuplicateGroup(BaseModel):
    kind: str = Field(description="exact (same bytes) or near")
    count: int
    similarity: float
    images: list[DuplicateImage]


class DuplicatesPage(BaseModel):
    threshold: float
    folder: str | None
    total_groups: int
    images_in_groups: int
    groups: list[DuplicateGroup]
    limit: int
    offset: int
    has_more: bool


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route."""
    described = {
        400: "a body that cannot be parsed (not JSON, or broken multipart)",
        404: "not found",
        413: "the upload is larger than UPLOAD_MAX_MB",
        409: "a change asked of a server whose database is a read-only replica: ask the primary's",
        415: "not a usable image (or a video that cannot be read or converted)",
        422: "an invalid request, said in one line",
        503: "the database or the model is not available (yet); try again",
    }
    return {code: {"model": QueryErrorBody if code == 422 else Error, "description": described[code]} for code in codes}


def answers(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's documented answers: `model` with 200, and these errors."""
    return {200: {"model": model, "description": "OK"}, **errors(*codes)}


def image_bytes(description: str) -> dict[int | str, dict[str, Any]]:
    """The answers of a route that sends a file's bytes rather than JSON: all of it, or the part a
    `Range` header asks for (Starlette answers ranges on every file it sends, with its own errors)."""
    types = (
        "image/jpeg image/png image/webp image/gif image/bmp image/tiff image/heic image/heif image/avif image/jxl "
        "image/x-adobe-dng video/mp4 video/webm video/x-matroska video/x-msvideo video/3gpp application/octet-stream"
    ).split()
    content = {t: {"schema": {"type": "string", "format": "binary"}} for t in types}
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        200: {"content": content, "description": description},
        206: {"content": content, "description": "the part a Range header asks for"},
        400: {"content": text, "description": "a Range header that cannot be read"},
        416: {"content": text, "description": "a Range beyond the end of the file"},
    }
