"""Deterministic, vectorized synthetic check-ins for the demo and the benchmarks.

Every value is a pure function of (seed, user index, row index), computed with a counter-based
hash (the splitmix64 finalizer over uint64 numpy arrays) rather than a stateful RNG. A user's rows
are therefore the same however the user range is split into batches, which lets benchmarks stream
1,000,000 users in bounded memory and still compare runs row for row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]

DEFAULT_AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
MAX_CHECKINS_PER_USER = 5000
HISTORY_DAYS = 400
FUTURE_DAYS = 3
_ROW_BITS = 13  # 2**13 > MAX_CHECKINS_PER_USER, so (user << 13 | row) names each check-in uniquely
_SIGMA = 1.6  # lognormal shape: median ~6 check-ins at mean 20, a few hundred users per million >1000
_CHUNK_USERS = 50_000  # keeps every Arrow string column far below the 2 GiB int32-offset limit
_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TS = pa.timestamp("us", tz="UTC")
_TEXT_COLUMNS = ("privacy", "text_content", "media_url", "media_type", "thumbnail_url", "location_name")
CHECKIN_ARROW_SCHEMA = pa.schema(
    [("id", pa.string()), ("user_id", pa.string())]
    + [(f"{c}_at", TS) for c in ("created", "updated", "deleted")]
    + [(c, pa.string()) for c in _TEXT_COLUMNS]
    + [("tags", pa.list_(pa.string()))]
)

# Value pools, one per paragraph, entries split on "|": tags (most popular first, which the Zipf-like
# weights below rely on), text openers, text phrases, text endings (the first one empty), places.
_POOLS = """\
coffee|hiking|brunch|yoga|running|travel|foodie|sunset|beach|music|books|photography|art|cycling|pizza
|friends|gym|wine|family|concert|museum|sushi|dogs|bakery|ramen|cocktails|tea|camping|garden|beer
|climbing|cats|festival|market|streetart|surfing|skiing|swimming|architecture|nightlife

Finally:|Loving|Can't beat|Throwback to|Nothing beats|Weekend:|Still thinking about|Just me and
|Best part of the day:|Sunday mood:|First time:|Back again for

a proper flat white|the view from the top|sunset by the water|fresh croissants|a long run along the river
|live music downtown|the best ramen in town|a slow morning with a good book|tacos with the crew
|fresh powder|a rainy museum day|the farmers market haul|an evening flow class|late-night pizza
|the trail to the lake|rooftop drinks

|!| ☕| 🌅| 🙌|...| #blessed| — highly recommend| 😍| (again)

Blue Bottle Coffee, Oakland|Central Park|Golden Gate Bridge|Café de Flore, Paris|Mission Dolores Park
|Tempelhofer Feld|Zürich HB|Shibuya Crossing|Brooklyn Bridge Park|Lake Tahoe|Yosemite Valley
|Ferry Building Marketplace|Barceloneta Beach|Ölüdeniz, Fethiye|Home|The Office|Runyon Canyon
|Venice Beach|Kreuzberg, Berlin|Borough Market|São Paulo|Stanley Park|Málaga Old Town|Tate Modern"""
_TAG_POOL, _OPENERS, _PHRASES, _ENDINGS, _PLACES = (
    pa.array(paragraph.replace("\n", "").split("|")) for paragraph in _POOLS.split("\n\n")
)
TAGS: tuple[str, ...] = tuple(_TAG_POOL.to_pylist())
_RARE_TAGS = ("café", "straße", "οδος")  # Title/UPPER variants give 'Straße', 'ΟΔΟΣ', 'CAFÉ'
_ALL_TAGS = TAGS + _RARE_TAGS
_VARIANTS = 5  # lower, Title, UPPER, '  lower ', ' Title'; index len(_ALL_TAGS)*5 is ''
_TAG_VOCAB = pa.array([v for t in _ALL_TAGS for v in (t, t.title(), t.upper(), f"  {t} ", f" {t.title()}")] + [""])
_VARIANT_CUM = np.array([0.82, 0.90, 0.93, 0.97, 0.99])  # the remaining 1% become ''
_NTAGS_CUM = np.array([0.12, 0.42, 0.72, 0.90])  # P(0..3 tags) cumulative; 10% get 4
_TAG_W = np.concatenate([1.0 / np.arange(1, len(TAGS) + 1) ** 0.8, np.full(len(_RARE_TAGS), 0.07)])
_TAG_CUM = np.cumsum(_TAG_W) / _TAG_W.sum()
_PRIVACY = pa.array(["public", "friends", "private"])
_PRIVACY_CUM = np.array([0.80, 0.92])
_MEDIA_BASE = "https://media.montage.example"

_M1, _M2, _GOLDEN = (np.uint64(c) for c in (0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15))
_MASK64 = (1 << 64) - 1
_STREAM_MUL = 0xD1B54A32D192ED03
_USER_ID_KEY = 0x5EED_0F_05E7_1D  # fixed: user ids name users, so they do not move with the seed
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _mix(x: U64, stream: int = 0) -> U64:
    """splitmix64 finalizer of x ^ stream: a bijection on uint64, so distinct inputs never collide."""
    # Spreading the stream over all 64 bits keeps x ^ 1 and x ^ 2 (neighbouring keys) apart.
    z = (x ^ np.uint64(stream * _STREAM_MUL & _MASK64)) + _GOLDEN  # uint64 arrays wrap, as wanted
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _unit(h: U64) -> NDArray[np.float64]:
    """Top 53 bits as a float in [0, 1); the low bits stay free for small independent choices."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _low(h: U64, shift: int | I64, modulo: int | I64) -> I64:
    """16 bits of h from bit `shift` on, modulo a small number (relative bias <= modulo / 65536)."""
    bits = (h >> np.asarray(shift, np.uint64)) & np.uint64(0xFFFF)
    return (bits % np.asarray(modulo, np.uint64)).astype(np.int64)


def _uuid_text(hi: U64, lo: U64) -> pa.Array:
    """Canonical lower-case v4-style uuid text, formatted as a byte matrix in one pass."""
    n = len(hi)
    words = np.empty((n, 2), dtype=">u8")
    words[:, 0] = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x4000)
    words[:, 1] = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)
    raw = words.view(np.uint8).reshape(n, 16)
    nibbles = np.stack([raw >> 4, raw & 15], axis=2).reshape(n, 32)
    text = np.full((n, 36), ord("-"), np.uint8)
    text[:, _HEX_POS] = _HEX[nibbles]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


@overload
def user_id_for(index: int) -> str: ...
@overload
def user_id_for(index: NDArray[np.integer[Any]]) -> pa.Array: ...
def user_id_for(index: int | NDArray[np.integer[Any]]) -> str | pa.Array:
    """The user_id text of user index(es); independent of the seed so users keep their identity."""
    idx = np.atleast_1d(np.asarray(index))
    if idx.size and int(idx.min()) < 0:
        raise ValueError("user index must be >= 0")
    uk = _mix(idx.astype(np.uint64), _USER_ID_KEY)
    ids = _uuid_text(_mix(uk, 1), _mix(uk, 2))
    return str(ids[0].as_py()) if np.ndim(index) == 0 else ids


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. as_of defaults to a fixed instant so that the default output is reproducible."""

    users: int
    seed: int = 42
    as_of: datetime = DEFAULT_AS_OF
    mean_checkins_per_user: float = 20.0

    def __post_init__(self) -> None:
        if self.users < 0:
            raise ValueError("users must be >= 0")
        if not 1.0 <= self.mean_checkins_per_user <= MAX_CHECKINS_PER_USER / 4:
            raise ValueError(f"mean_checkins_per_user must be in [1, {MAX_CHECKINS_PER_USER // 4}]")
        if self.as_of.tzinfo is None or self.as_of.utcoffset() is None:
            raise ValueError("as_of must be timezone-aware")
        object.__setattr__(self, "as_of", self.as_of.astimezone(UTC))


@lru_cache(maxsize=32)
def _lognormal_mu(mean: float) -> float:
    """mu such that E[clip(ceil(lognormal(mu, _SIGMA)), 1, cap)] == mean, by bisection on a z grid."""
    z = np.linspace(-8.0, 8.0, 32_001)
    w = np.exp(-0.5 * z * z) / np.exp(-0.5 * z * z).sum()
    lo, hi = -20.0, float(np.log(MAX_CHECKINS_PER_USER))
    for _ in range(60):
        mid = (lo + hi) / 2
        counts = np.clip(np.ceil(np.exp(mid + _SIGMA * z)), 1, MAX_CHECKINS_PER_USER)
        lo, hi = (mid, hi) if float(w @ counts) < mean else (lo, mid)
    return (lo + hi) / 2


def _user_counts(spec: SyntheticSpec, ukey: U64) -> I64:
    u1, u2 = _unit(_mix(ukey, 1)), _unit(_mix(ukey, 2))
    z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)  # Box-Muller, one normal per user
    x = np.exp(_lognormal_mu(spec.mean_checkins_per_user) + _SIGMA * z)
    return np.clip(np.ceil(x), 1, MAX_CHECKINS_PER_USER).astype(np.int64)


def _timestamps(spec: SyntheticSpec, ukey: U64, rkey: U64, local: I64, ridx: I64) -> list[pa.Array]:
    as_of = (spec.as_of - _EPOCH) // timedelta(microseconds=1)
    # Users joined at different times (skewed to long histories), so activity grows toward as_of.
    span_days = 7.0 + (HISTORY_DAYS - 7.0) * np.sqrt(_unit(_mix(ukey, 3)))
    created = as_of - 1 - (_unit(_mix(rkey, 10)) * span_days[local] * _DAY_US).astype(np.int64)
    # Afternoon/evening-peaked time of day (triangular over 06:00-24:00) instead of uniform.
    tri = (_unit(_mix(rkey, 11)) + _unit(_mix(rkey, 16))) / 2
    created = created - created % _DAY_US + 6 * _HOUR_US + (tri * 18 * _HOUR_US).astype(np.int64)
    created[created >= as_of] -= _DAY_US
    u = _unit(_mix(rkey, 12))
    future = u < 0.005
    created[future] = as_of + 1 + (u[future] / 0.005 * FUTURE_DAYS * _DAY_US).astype(np.int64)
    # Ties copy the nearest earlier untied row of the same user; row 0 is never tied, so the
    # running max never reaches into the previous user.
    tied = (_unit(_mix(rkey, 13)) < 0.025) & (ridx > 0)
    src = np.maximum.accumulate(np.where(tied, 0, np.arange(len(created))))
    created = created[src]
    room = np.maximum(as_of - created, 0)
    u = _unit(_mix(rkey, 14))
    updated = created + np.where(u < 0.05, (u / 0.05 * room).astype(np.int64), 0)
    u = _unit(_mix(rkey, 15))
    deleted = created + (u / 0.03 * room).astype(np.int64)
    return [pa.array(created, TS), pa.array(updated, TS), pa.array(deleted, TS, mask=u >= 0.03)]


def _tags(ukey: U64, rkey: U64, local: I64) -> pa.Array:
    # Weighted sampling without replacement (Efraimidis-Spirakis keys) of 4 favourites per user.
    grid = _mix(ukey[:, None] ^ (np.arange(1, len(TAGS) + 1, dtype=np.uint64) * _GOLDEN)[None, :])
    keys = np.log1p(-_unit(grid)) / _TAG_W[None, : len(TAGS)]
    top = np.argpartition(-keys, 4, axis=1)[:, :4]
    # Best-key first, so users with only 2-3 favourites keep the sample's leading picks.
    favs = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
    n_favs = 2 + _low(_mix(ukey, 4), 0, 3)
    ntags = np.searchsorted(_NTAGS_CUM, _unit(_mix(rkey, 20)), side="right")
    offsets = np.concatenate([[0], np.cumsum(ntags)])
    frow = np.repeat(np.arange(len(rkey)), ntags)
    pos = np.arange(len(frow)) - offsets[frow]
    fk = _mix(rkey[frow] ^ (pos.astype(np.uint64) + np.uint64(21)) * np.uint64(_STREAM_MUL))
    fk2 = _mix(fk, 22)
    fl = local[frow]
    # Favourite slots rotate within a check-in and stop after n_favs, so favourites never repeat
    # by accident: duplicates come only from the explicit `dup` pass (and rare random collisions).
    slot = (_low(rkey[frow], 0, n_favs[fl]) + pos) % n_favs[fl]
    other = np.minimum(np.searchsorted(_TAG_CUM, _unit(fk2), side="right"), len(_ALL_TAGS) - 1)
    base = np.where((_unit(fk) < 0.80) & (pos < n_favs[fl]), favs[fl, slot], other)
    dup = _low(fk, 0, 1 << 16) < 0.03 * (1 << 16)
    for p in range(1, 4):  # fixed 3 passes so a duplicate always copies the already-final previous tag
        at = np.flatnonzero(dup & (pos == p))
        base[at] = base[at - 1]
    variant = np.searchsorted(_VARIANT_CUM, _low(fk2, 0, 1 << 16) / (1 << 16), side="right")
    flat = np.where(variant < _VARIANTS, base * _VARIANTS + variant, len(_ALL_TAGS) * _VARIANTS)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), _TAG_VOCAB.take(pa.array(flat)))


def _take(values: pa.Array, idx: I64, present: NDArray[np.bool_]) -> pa.Array:
    return values.take(pa.array(idx, mask=~present))


def _content(ukey: U64, rkey: U64, local: I64, ids: pa.Array, uids: pa.Array) -> list[pa.Array]:
    u = _unit(_mix(rkey, 30))
    media = u < 0.40
    video = u >= 0.40 * 0.72
    ext = _take(pa.array([".jpg", ".mp4"]), video.astype(np.int64), media)
    media_type = _take(pa.array(["image", "video"]), video.astype(np.int64), media)
    media_url = pc.binary_join_element_wise(f"{_MEDIA_BASE}/u/", uids, "/", ids, ext, "")
    thumb = pc.binary_join_element_wise(f"{_MEDIA_BASE}/t/", ids, pc.if_else(media, ".jpg", None), "")
    h = _mix(rkey, 31)
    wrote = _unit(h) < 0.50
    parts = [_take(a, _low(h, 16 * i, len(a)), wrote) for i, a in enumerate((_OPENERS, _PHRASES, _ENDINGS))]
    text = pc.binary_join_element_wise(parts[0], " ", parts[1], parts[2], "")
    h = _mix(rkey, 32)
    u = _unit(h)
    home = _mix(ukey, 5)[local]  # two regular haunts per user, visited 65% of the time
    n_places = len(_PLACES)
    place = np.where(u < 0.30 * 0.65, _low(home, 16 * _low(h, 0, 2), n_places), _low(h, 16, n_places))
    location = _take(_PLACES, place, u < 0.30)
    privacy = _PRIVACY.take(pa.array(np.searchsorted(_PRIVACY_CUM, _unit(_mix(rkey, 33)), side="right")))
    return [privacy, text, media_url, media_type, thumb, location]


def _generate_block(spec: SyntheticSpec, users: U64) -> pa.Table:
    count = len(users)
    seed = _mix(np.array([spec.seed & _MASK64], np.uint64))
    ukey = _mix(users, int(_mix(seed, 1)[0]))
    counts = _user_counts(spec, ukey)
    local = np.repeat(np.arange(count), counts)
    ridx = np.arange(len(local)) - np.repeat(np.cumsum(counts) - counts, counts)
    # (user << 13 | row) is unique and _mix is a bijection, so row keys (and hence ids) never collide.
    rkey = _mix(((users[local] << np.uint64(_ROW_BITS)) | ridx.astype(np.uint64)), int(_mix(seed, 2)[0]))
    ids = _uuid_text(_mix(rkey, 1), _mix(rkey, 2))
    uids = user_id_for(users.astype(np.int64)).take(pa.array(local))
    columns = [ids, uids, *_timestamps(spec, ukey, rkey, local, ridx)]
    columns += [*_content(ukey, rkey, local, ids, uids), _tags(ukey, rkey, local)]
    return pa.Table.from_arrays(columns, schema=CHECKIN_ARROW_SCHEMA)


def generate_checkins(spec: SyntheticSpec, user_offset: int = 0, user_count: int | None = None) -> pa.Table:
    """Check-ins of users [user_offset, user_offset + user_count), ordered by user then row.

    A user's rows do not depend on how the range is split. Large ranges come back in chunks of
    50,000 users so that no string column outgrows int32 offsets.
    """
    count = spec.users - user_offset if user_count is None else user_count
    if user_offset < 0 or count < 0 or user_offset + count > spec.users:
        raise ValueError(f"user range [{user_offset}, {user_offset + count}) outside [0, {spec.users})")
    return generate_users(spec, np.arange(user_offset, user_offset + count, dtype=np.uint64))


def generate_users(spec: SyntheticSpec, users: NDArray[np.integer[Any]]) -> pa.Table:
    """Check-ins of the users with these indexes (each in [0, spec.users)), in this order of users."""
    indexes: U64 = np.asarray(users, dtype=np.uint64)
    if indexes.size and int(indexes.max()) >= spec.users:
        raise ValueError(f"user index {int(indexes.max())} outside [0, {spec.users})")
    starts = range(0, len(indexes), _CHUNK_USERS)
    blocks = [_generate_block(spec, indexes[start : start + _CHUNK_USERS]) for start in starts]
    return pa.concat_tables(blocks) if blocks else CHECKIN_ARROW_SCHEMA.empty_table()
