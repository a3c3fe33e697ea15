"""Importers: data in the formats of other tools, into mmfuse's native format.

* :func:`import_csd` - CMU Multimodal SDK computational sequences (``.csd``, HDF5; read with ``h5py``, no SDK),
  aligned at word level onto a reference sequence with :mod:`mmfuse.align`;
* :func:`import_mmsa` - MMSA-style feature pickles (refused unless ``allow_pickle=True``);
* :func:`import_feature_folders` - one folder per modality with one file per video, matched by name.

Each returns ``(path, ImportReport)``: what was imported, what was kept with a modality masked, and what was
left out and why. See ``docs/importers.md``.

Example:
    >>> from mmfuse.importers import ImportReport
    >>> ImportReport(source="x", format="csd").ok
    True
"""

from __future__ import annotations

from mmfuse.importers._common import ImportReport, read_splits
from mmfuse.importers.csd import CsdSequence, import_csd, read_csd, write_csd
from mmfuse.importers.feature_folders import import_feature_folders
from mmfuse.importers.mmsa import MMSA_MODALITIES, import_mmsa

__all__ = [
    "MMSA_MODALITIES",
    "CsdSequence",
    "ImportReport",
    "import_csd",
    "import_feature_folders",
    "import_mmsa",
    "read_csd",
    "read_splits",
    "write_csd",
]
