"""From a received file's header to an :class:`~dcmsortd.model.instance.Instance`.

:func:`read_instance` reads the file (see :mod:`dcmsortd.dicom.dicomfile`), keeping only the
elements the record and the rules read (:func:`wanted_tags`), and hands the dataset to
:func:`instance_from_dataset`, the pure part. Both raise only
:class:`~dcmsortd.model.errors.HeaderError`, for any file content.

Fields are rendered by :mod:`dcmsortd.dicom.elements` (``str(value)`` as pydicom renders it,
left out when the element is absent); UIDs lose their NUL/space padding. StudyDescription
is ``missing`` when absent. OSLevel comes from SoftwareVersions' ``release:<X>_...`` text
(``X``: up to the first ``_``, as the original did).

Siemens: the CSA image header gives ``PhaseEncodingDirectionPositive`` and the diffusion
entry; the protocol in the CSA series header gives ``siemensUUID``, ``NumSlices``,
``MeasID`` and overrides ``OSLevel``. The series header (~100 KB, ~1-5 ms to parse) is
parsed once per series and content: :class:`SeriesCache` keys it by SeriesInstanceUID, the
header's length and its CRC-32, and compares a later image's header with the last one of its
series first (a comparison costs a tenth of a CRC). The image header (~100 tags) is parsed
for the first image of a series this process reads and, after that, only in series whose
images carry diffusion information (Siemens writes DiffusionDirectionality in every image
of a diffusion series, b=0 included); later images of other series add nothing from it.
A corrupt CSA header is logged and its fields left out; the image is still sorted.

Values are decoded without pydicom's validation (it only warns, at a high cost); other
pydicom warnings are logged at DEBUG, not raised.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dcmsortd.dicom import csa, protocol
from dcmsortd.dicom.dicomfile import read_dataset
from dcmsortd.dicom.elements import element_text, nested_text
from dcmsortd.dicom.tagvalues import rule_tag, values_from_dataset
from dcmsortd.model.errors import HeaderError
from dcmsortd.model.instance import DiffusionEntry, Instance, SrEntry, TagKey

logger = logging.getLogger(__name__)

# Series-record key -> tag, for the fields taken from one element as str(value).
RECORD_TAGS: tuple[tuple[str, int], ...] = (
    ("Manufacturer", 0x00080070),
    ("ManufacturerModelName", 0x00081090),
    ("SoftwareVersion", 0x00181020),
    ("InstitutionName", 0x00080080),
    ("StationName", 0x00081010),
    ("Modality", 0x00080060),
    ("OperatorsName", 0x00081070),
    ("StudyID", 0x00200010),
    ("PatientID", 0x00100020),
    ("PatientName", 0x00100010),
    ("PatientSex", 0x00100040),
    ("StudyDate", 0x00080020),
    ("StudyTime", 0x00080030),
    ("SeriesTime", 0x00080031),
    ("AccessionNumber", 0x00080050),
    ("StudyDescription", 0x00081030),
    ("SeriesDescription", 0x0008103E),
    ("SeriesNumber", 0x00200011),
    ("InstanceNumber", 0x00200013),
    ("SequenceName", 0x00180024),
    ("ScanOptions", 0x00180022),
    ("ScanningSequence", 0x00180020),
    ("SequenceVariant", 0x00180021),
    ("EchoTime", 0x00180081),
    ("RepetitionTime", 0x00180080),
    ("SliceThickness", 0x00180050),
    ("SliceSpacing", 0x00180088),
    ("AcquisitionMatrix", 0x00181310),
    ("ImageType", 0x00080008),
    ("ImagesInAcquisition", 0x00201002),
    ("NumberOfTemporalPositions", 0x00200105),
    ("SliceLocation", 0x00201041),
    ("Slices", 0x0021104F),
    ("SequenceType", 0x20011020),
    ("PulseSequenceName", 0x0019109C),
    ("ActiveCoils", 0x0051100F),
    ("AcquisitionLength", 0x0051100A),
    ("Private0019_105a", 0x0019105A),
    ("Private0019_10BB", 0x001910BB),
    ("Private0019_10B3", 0x001910B3),
    ("Private0019_109C", 0x0019109C),
    ("Private0020_0105", 0x00200105),
    ("Private0021_104F", 0x0021104F),
    ("Private0043_1039", 0x00431039),
)
# What later images of a series still need: the record takes the rest from the first image.
PER_IMAGE_KEYS = frozenset(
    {"Modality", "PatientID", "StudyDate", "StudyTime", "Manufacturer", "InstanceNumber",
     "SliceLocation"}
)
_PER_IMAGE_TAGS = tuple((k, t) for k, t in RECORD_TAGS if k in PER_IMAGE_KEYS)
UID_TAGS: tuple[tuple[str, int], ...] = (
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
    ("SOPInstanceUID", 0x00080018),
)
_UID_TAG_SET = frozenset(tag for _, tag in UID_TAGS)  # their VR is UI (read implicit: None)
_SOP_CLASS = 0x00080016
# Enhanced multi-frame (Siemens XA): first item of each sequence on the way.
_PHASE_ENCODING_STEPS = (0x52009229, 0x00189112, 0x00180091)
_PRIVATE_0021_1106 = (0x52009230, 0x002111FE, 0x00211106)
_SHARED_GROUPS, _PER_FRAME_GROUPS = 0x52009229, 0x52009230
# Enhanced files keep these in functional groups, not at the top level.
_FUNCTIONAL_GROUP_FALLBACKS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("EchoTime", (0x00189114, 0x00189082)),  # MR Echo Sequence > EffectiveEchoTime
    ("RepetitionTime", (0x00189112, 0x00180080)),  # MR Timing and Related Parameters
    ("SliceThickness", (0x00289110, 0x00180050)),  # Pixel Measures Sequence
)
_SR_TAGS = (("SOPClassUID", _SOP_CLASS), ("ContentDate", 0x00080023), ("ContentTime", 0x00080033))
_DOCUMENT_TITLE = (0x0040A043, 0x00080104)  # ConceptNameCodeSequence[0].CodeMeaning
# GE: "27\\LX\\MR Software release:DV26.0_R03_1831.b" -> "DV26.0" (up to the first "_")
_RELEASE = re.compile(r"release:\s*([^\s\\'\",\]_]+)")
_BASELINE = re.compile(r"N4_([^_]+)_")

SeriesKey = tuple[str, int, int]  # SeriesInstanceUID, CSA series header length, its CRC-32
LAST_HEADERS = 16  # series whose last CSA series header is kept whole (SeriesCache.protocol)


class SeriesCache:
    """Per-process LRU cache of per-series derived data (the protocol fields)."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[SeriesKey, Mapping[str, str]] = OrderedDict()
        self._seen: OrderedDict[str, bool] = OrderedDict()  # series UID -> diffusion seen
        # series UID -> its last series header and fields (see protocol())
        self._last_header: OrderedDict[str, tuple[bytes, Mapping[str, str]]] = OrderedDict()

    def first_time(self, series_uid: str) -> bool:
        """True the first time (in this process, lately) an image of the series is read."""
        if series_uid in self._seen:
            self._seen.move_to_end(series_uid)
            return False
        self._seen[series_uid] = False
        while len(self._seen) > self.maxsize * 16:
            self._seen.popitem(last=False)
        return True

    def mark_diffusion(self, series_uid: str) -> None:
        """Note that an image of the series carries diffusion information."""
        if series_uid in self._seen:
            self._seen[series_uid] = True

    def diffusion(self, series_uid: str) -> bool:
        """False only for a series read here before whose first image had no diffusion."""
        return self._seen.get(series_uid, True)

    def __len__(self) -> int:
        return len(self._data)

    def protocol(
        self, series_uid: str, raw: bytes, parse: Callable[[bytes], Mapping[str, str]]
    ) -> Mapping[str, str]:
        """``parse(raw)`` for the series header ``raw`` of ``series_uid``, parsed once.

        The last header of each of the recent series is kept: the same bytes again (every
        later image of a series) cost a comparison, ~2 µs for 100 KB, not a CRC (~26 µs).
        """
        last = self._last_header.get(series_uid)
        if last is not None and last[0] == raw:
            self.hits += 1
            self._last_header.move_to_end(series_uid)
            return last[1]
        key = (series_uid, len(raw), zlib.crc32(raw))
        found = self.get(key)
        if found is None:
            found = parse(raw)
            self.put(key, found)
        self._last_header[series_uid] = (raw, found)
        self._last_header.move_to_end(series_uid)
        while len(self._last_header) > LAST_HEADERS:
            self._last_header.popitem(last=False)
        return found

    def get(self, key: SeriesKey) -> Mapping[str, str] | None:
        found = self._data.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return found

    def put(self, key: SeriesKey, value: Mapping[str, str]) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)


def read_instance(
    path: str,
    rule_keys: frozenset[TagKey] = frozenset(),
    cache: SeriesCache | None = None,
    full: bool = False,
) -> Instance:
    """Read the header of the file at ``path`` into an Instance; raise HeaderError."""
    try:
        with _lenient(path):
            read = read_dataset(path, wanted_tags(rule_keys))
            inst = instance_from_dataset(read.dataset, path, rule_keys, cache, full,
                                         source_ae=read.source_ae)
            if read.image_without_pixels:
                return dataclasses.replace(inst, pixel_data=False)
            return inst
    except HeaderError:
        raise
    except Exception as exc:  # the contract: any file content gives HeaderError, nothing else
        raise HeaderError(f"unexpected {type(exc).__name__} reading the header: {exc}") from exc


# Top-level tags instance_from_dataset reads (rule keys add theirs; the CSA block, group
# 0x0028 and private creators are always kept by the reader).
_WANTED = frozenset(
    [tag for _, tag in RECORD_TAGS + UID_TAGS + _SR_TAGS]
    + [0x00100020, _SHARED_GROUPS, _PER_FRAME_GROUPS, _PHASE_ENCODING_STEPS[0],
       _PRIVATE_0021_1106[0], _DOCUMENT_TITLE[0]]
    + [inner[0] for _, inner in _FUNCTIONAL_GROUP_FALLBACKS]
)


@lru_cache(maxsize=16)
def wanted_tags(rule_keys: frozenset[TagKey]) -> frozenset[int]:
    """The top-level tags an Instance needs: the record's and those the rules read."""
    return _WANTED | frozenset(t for t in map(rule_tag, rule_keys) if t is not None)


def instance_from_dataset(
    ds: Dataset,
    path: str,
    rule_keys: frozenset[TagKey] = frozenset(),
    cache: SeriesCache | None = None,
    full: bool = False,
    source_ae: str | None = None,
) -> Instance:
    """Extract an Instance from a dataset read without pixel data; raise HeaderError.

    ``source_ae``: the file meta's (0002,0016) as the reader found it (the data set holds
    no file meta), kept in the Instance for the sorter.

    With a ``cache``, only the first image of a series seen by this process gets every
    record field; later ones get the fields that change per image (``PER_IMAGE_KEYS``) and
    are marked ``complete=False`` (the series record keeps the first image's values).
    ``full`` asks for every field regardless.
    """
    with _lenient(path):
        study_uid, series_uid, sop_uid = (_uid(ds, tag, name) for name, tag in UID_TAGS)
        complete = full or cache is None or cache.first_time(series_uid)
        fields = record_fields(ds) if complete else _per_image_fields(ds)
        fields.update({"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
        block = _csa_block(ds, path)
        image_csa = None
        if block is not None and (complete or cache is None or cache.diffusion(series_uid)):
            image_csa = _csa_header(ds, "image", path, block)
        fields.update(_image_csa_fields(image_csa))
        diffusion = diffusion_entry(image_csa, sop_uid, fields.get("InstanceNumber", ""))
        if diffusion is not None and cache is not None:
            cache.mark_diffusion(series_uid)
        if block is not None:
            fields.update(_series_fields(ds, series_uid, path, cache, block))
        modality = fields.get("Modality", "")
        return Instance(
            path=path,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            modality=modality,
            patient_id=fields.get("PatientID", ""),
            study_date=fields.get("StudyDate", ""),
            study_time=fields.get("StudyTime", ""),
            manufacturer=fields.get("Manufacturer", ""),
            fields=fields,
            diffusion=diffusion,
            sr=sr_entry(ds, sop_uid, study_uid) if modality == "SR" else None,
            rule_values=_rule_values(ds, rule_keys),
            complete=complete,
            source_ae=source_ae,
        )


def _from_functional_groups(
    ds: Dataset, fields: dict[str, str], key: str, inner: tuple[int, ...]
) -> None:
    """Fill ``key`` from the shared, else the first per-frame, functional group item."""
    for group in (_SHARED_GROUPS, _PER_FRAME_GROUPS):
        value = nested_text(ds, (group, *inner))
        if value is not None:
            fields[key] = value
            return


def _plain_fields(ds: Dataset, tags: tuple[tuple[str, int], ...]) -> dict[str, str]:
    """``{key: str(value)}`` of the elements ``tags`` present in ``ds``."""
    fields = {}
    for key, tag in tags:
        value = element_text(ds, tag)
        if value is not None:
            fields[key] = value
    return fields


def _per_image_fields(ds: Dataset) -> dict[str, str]:
    """The fields a later image of a known series contributes (see ``PER_IMAGE_KEYS``)."""
    return _plain_fields(ds, _PER_IMAGE_TAGS)


def record_fields(ds: Dataset) -> dict[str, str]:
    """The series-record fields read from plain elements (no CSA), OSLevel from the text."""
    fields = _plain_fields(ds, RECORD_TAGS)
    fields.setdefault("StudyDescription", "missing")
    sop_class = element_text(ds, _SOP_CLASS)
    if sop_class is not None:
        fields["SOPClassUID"] = sop_class.strip("\x00 ")
    for key, inner in _FUNCTIONAL_GROUP_FALLBACKS:
        if key not in fields:
            _from_functional_groups(ds, fields, key, inner)
    steps = nested_text(ds, _PHASE_ENCODING_STEPS)
    if steps is not None:
        fields["PhaseEncodingSteps"] = steps
    counters = nested_text(ds, _PRIVATE_0021_1106)
    if counters is not None:
        fields["Private0021_1106"] = counters.rpartition("_")[2]
    release = _RELEASE.search(fields.get("SoftwareVersion", ""))
    if release:
        fields["OSLevel"] = release[1]
    return fields


def protocol_fields(prot: Mapping[str, str]) -> dict[str, str]:
    """Series-record fields from a parsed Siemens protocol (see :mod:`dcmsortd.dicom.protocol`).

    siemensUUID is ``sWipMemBlock.tFree`` (VB versions spell it ``sWiPMemBlock``); MeasID
    is ``lSequenceID``, else the first name ending in ``SequenceID``; OSLevel is ``X`` of a
    ``tMeasuredBaselineString`` of the form ``N4_X_...`` (VB17 has none: no OSLevel).
    """
    out = {}
    uuid = prot.get("sWipMemBlock.tFree", prot.get("sWiPMemBlock.tFree"))
    if uuid is not None:
        out["siemensUUID"] = uuid
    if "sGroupArray.asGroup[0].nSize" in prot:
        out["NumSlices"] = prot["sGroupArray.asGroup[0].nSize"]
    meas_id = prot.get("lSequenceID")
    if meas_id is None:
        meas_id = next((v for k, v in prot.items() if k.endswith("SequenceID")), None)
    if meas_id is not None:
        out["MeasID"] = meas_id
    baseline = _BASELINE.match(prot.get("sProtConsistencyInfo.tMeasuredBaselineString", ""))
    if baseline:
        out["OSLevel"] = baseline[1]
    return out


def diffusion_entry(
    image_csa: csa.CsaHeader | None, sop_uid: str, instance_number: str
) -> DiffusionEntry | None:
    """The image's diffusion information, when its CSA DiffusionDirectionality is set."""
    if image_csa is None:
        return None
    directionality = csa.scalar(image_csa, "DiffusionDirectionality")
    if not directionality:
        return None
    return DiffusionEntry(
        sop_uid=sop_uid,
        instance_number=instance_number,
        b_value=csa.scalar(image_csa, "B_value") or "",
        directionality=directionality,
        gradient_direction=csa.vector(image_csa, "DiffusionGradientDirection"),
    )


def sr_entry(ds: Dataset, sop_uid: str, study_uid: str) -> SrEntry:
    """The structured report's listing entry (absent values left out)."""
    fields = {"SOPInstanceUID": sop_uid, "StudyInstanceUID": study_uid}
    for key, tag in _SR_TAGS:
        value = element_text(ds, tag)
        if value is not None:
            fields[key] = value.strip("\x00 ") if key == "SOPClassUID" else value
    title = nested_text(ds, _DOCUMENT_TITLE)
    if title is not None:
        fields["DocumentTitle"] = title
    patient_id = element_text(ds, 0x00100020)
    if patient_id is not None:
        fields["PatientID"] = patient_id
    return SrEntry(sop_uid=sop_uid, fields=fields)


def _uid(ds: Dataset, tag: int, name: str) -> str:
    uid = uid_text(ds, tag).strip("\x00 ")
    if not uid:
        raise HeaderError(f"missing {name}")
    return uid


def uid_text(ds: Dataset, tag: int) -> str:
    """``element_text(ds, tag) or ""`` for a UID element (VR UI), the common case faster.

    A SOP Instance UID is new in every file, so the cache of converted values never helps
    it, and pydicom's conversion costs ~17 µs. A single value (no backslash) is decoded
    here the way pydicom does it: ISO 8859-1, trailing NULs and spaces removed, then the
    whitespace strip of its ``UID`` class. Anything else goes to pydicom.
    """
    elem = ds.get_item(BaseTag(tag), keep_deferred=True)  # converting it here could raise
    if (isinstance(elem, RawDataElement) and isinstance(elem.value, bytes)
            and (elem.VR == "UI" or (elem.VR is None and tag in _UID_TAG_SET))):
        text = elem.value.decode("latin-1").rstrip("\x00 ")
        if "\\" not in text:
            return text.strip()
    return element_text(ds, tag) or ""


def _csa_block(ds: Dataset, path: str) -> int | None:
    try:
        return csa.block_start(ds)
    except csa.CsaError as exc:
        logger.warning("%s: CSA headers ignored: %s", path, exc)
        return None


def _csa_header(ds: Dataset, kind: str, path: str, block: int) -> csa.CsaHeader | None:
    try:
        return csa.header(ds, kind, block)
    except csa.CsaError as exc:
        logger.warning("%s: CSA %s header ignored: %s", path, kind, exc)
        return None


def _image_csa_fields(image_csa: csa.CsaHeader | None) -> dict[str, str]:
    if image_csa is None:
        return {}
    positive = csa.scalar(image_csa, "PhaseEncodingDirectionPositive")
    return {} if positive is None else {"PhaseEncodingDirectionPositive": positive}


def _series_fields(
    ds: Dataset, series_uid: str, path: str, cache: SeriesCache | None, block: int
) -> Mapping[str, str]:
    try:
        raw = csa.raw_header(ds, "series", block)
    except csa.CsaError as exc:
        logger.warning("%s: CSA series header ignored: %s", path, exc)
        return {}
    if raw is None:
        return {}
    if cache is None:
        return _protocol_fields_from_csa(raw, path)
    return cache.protocol(series_uid, raw, lambda header: _protocol_fields_from_csa(header, path))


def _protocol_fields_from_csa(raw: bytes, path: str) -> dict[str, str]:
    try:
        text = csa.protocol_text(csa.parse(raw))
    except csa.CsaError as exc:
        logger.warning("%s: CSA series header ignored: %s", path, exc)
        return {}
    return {} if text is None else protocol_fields(protocol.parse(text))


def _rule_values(ds: Dataset, rule_keys: frozenset[TagKey]) -> dict[TagKey, Any]:
    if not rule_keys:
        return {}
    try:
        return values_from_dataset(ds, rule_keys)
    except Exception as exc:  # the file's content must never crash the caller
        raise HeaderError(
            f"cannot read the tags the rules use: {type(exc).__name__}: {exc}"
        ) from exc


_lenient_depth = 0


@contextmanager
def _lenient(path: str) -> Iterator[None]:
    """Read values without pydicom's validation; log its other warnings at DEBUG.

    Validation only warns (its default mode) and costs two thirds of the time spent
    decoding the record's values. Both settings are process-wide for the duration of
    the call: header reading is single-threaded in each dcmsortd process.
    """
    global _lenient_depth
    if _lenient_depth:  # read_instance -> instance_from_dataset: already set up
        yield
        return
    mode = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    _lenient_depth += 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        _lenient_depth -= 1
        pydicom_config.settings.reading_validation_mode = mode
    for warning in caught:
        logger.debug("%s: %s", path, warning.message)
