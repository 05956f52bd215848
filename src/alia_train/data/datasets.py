"""Training and per-language validation datasets on megatron-core's GPTDataset.

`build_datasets` must be called on every rank after torch.distributed and megatron's
parallel_state are initialised: megatron's builder builds its index caches on rank 0 while
the other ranks wait at a barrier, then loads them. Every rank gets the full datasets; the
sample order depends on the config only (seed, sequence length, sources, multipliers, split),
never on the world size, the number of steps or the batch size (sample_order.py), so
data-parallel sharding is left to the reader (training/batches.py) and a resume needs only
the consumed-samples count.

Train: one Blend over all sources, weights = tokens x multiplier (mixture.py).
Validation: one dataset per language, from `data.valid_sources` or, when those are empty,
carved out of each source by `data.split` ("train,valid,test" percentages of documents).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from alia_train.config.schema import Config, DataSource
from alia_train.data.checks import DataSourceError, check_source, check_sources
from alia_train.data.indexed import resolve_path
from alia_train.data.manifest import content_identity
from alia_train.data.mixture import MixturePlan, plan_mixture, source_tokens
from alia_train.data.sample_order import Blend, SourceEpochs
from alia_train.data.sample_shards import prepare_sample_sources

log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    train: torch.utils.data.Dataset
    valid: dict[str, torch.utils.data.Dataset]
    languages: list[str]
    planned_shares: dict[str, float]
    plan: MixturePlan | None = None
    sources: list[DataSource] = field(default_factory=list)


class LanguageDataset(torch.utils.data.Dataset):
    """A Blend whose items also say which language they came from.

    Items: tokens, labels (int64 [seq]), loss_mask (float32 [seq]), position_ids (int64 [seq])
    and lang_id (int64 scalar, an index into DataBundle.languages).

    Every item's token ids are checked against the vocabulary (a max and a min over one
    sequence: microseconds, against a step's milliseconds): the start-up samples only a few
    blocks of each shard (data/checks.py), and an id beyond the embedding would otherwise stop
    the run in torch's embedding (a traceback on CPU, a device-side assert on a GPU).
    """

    def __init__(self, blended: Blend, lang_of_dataset: list[int], paths: list[str], tokenizer) -> None:
        self.blended = blended
        self.lang_of_dataset = np.asarray(lang_of_dataset, dtype=np.int64)
        self.paths = paths
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.blended)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        item = self.blended[int(idx)]
        dataset_id = int(item.pop("dataset_id"))
        self._check_ids(item, dataset_id, int(idx))
        item["lang_id"] = torch.tensor(self.lang_of_dataset[dataset_id], dtype=torch.int64)
        return item

    def _check_ids(self, item: dict, dataset_id: int, idx: int) -> None:
        vocab = self.tokenizer.vocab_size
        for key in ("tokens", "labels"):
            ids = np.asarray(item[key])
            if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                bad = ids[(ids < 0) | (ids >= vocab)][0]
                raise DataSourceError(
                    f"{self.paths[dataset_id]}.bin: token id {bad} in sample {idx} is outside the {vocab} pieces "
                    f"of data.tokenizer {self.tokenizer.path}: the shard was changed after it was published, or "
                    "holds another tokenizer's ids; run `alia-data verify` on it, re-tokenize it with "
                    "`alia-data tokenize --force`, or remove it from data.sources")

    def lang_ids(self) -> np.ndarray:
        """The language of every sample, in sample order, without reading any tokens."""
        return self.lang_of_dataset[self.blended.source_ids()]


# ---------------------------------------------------------------------------------------------
# Sources


def resolve_sources(cfg: Config, tokenizer) -> tuple[list[DataSource], list[DataSource]]:
    """(train sources, validation sources) with absolute paths; prepares the sample corpus."""
    data = cfg.data
    sources = [DataSource(resolve_path(s.path), s.lang, s.multiplier) for s in data.sources]
    valid = [DataSource(resolve_path(s.path), s.lang, s.multiplier) for s in data.valid_sources]
    if not sources:
        if not data.use_sample:
            check_sources(cfg, tokenizer)  # raises: says what to set
        sources = prepare_sample_sources(data.cache_dir, tokenizer)
    return sources, valid


def split_matrix(split: str) -> list[tuple[float, float] | None]:
    """megatron's own reading of `data.split` ("train,valid,test", checked by
    config/validate.py): the (begin, end) fraction of the documents of each split, None for an
    empty one. The same function GPTDatasetConfig uses."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )

    return convert_split_vector_to_split_matrix(parse_and_normalize_split(split))


def doc_range(documents: int, matrix: list, which: int) -> tuple[int, int]:
    """The documents [begin, end) of split `which`. megatron rounds them inline in
    BlendedMegatronDatasetBuilder._build_megatron_dataset_splits (no function to call): the
    same expression here, checked against it in tests/data/test_datasets.py."""
    bounds = matrix[which]
    if bounds is None:
        return 0, 0
    return int(round(bounds[0] * float(documents))), int(round(bounds[1] * float(documents)))


# ---------------------------------------------------------------------------------------------
# Building


def _index_cache_dir(cache_dir: str, path: str) -> str:
    """Megatron keys its cached indices by path, seed, lengths and tokenizer, not by content:
    one directory per content of each source keeps shards re-tokenized in place
    (`alia-data tokenize --force`) from being read through indices built for the old ones."""
    digest = hashlib.sha256(content_identity(path).encode()).hexdigest()
    return os.path.join(cache_dir, "index_cache", digest[:16])


def _gpt_config(cfg: Config, tokenizer, path: str, split: str, matrix_keep: int | None):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    config = GPTDatasetConfig(
        random_seed=cfg.train.seed,
        sequence_length=cfg.train.seq_length,
        blend=([path], None),
        split=split,
        path_to_cache=_index_cache_dir(cfg.data.cache_dir, path),
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    if matrix_keep is not None:
        # Build only one split of the carved sources: megatron derives the split matrix from
        # `split`; dropping the other entries keeps the same document ranges (and cache keys
        # stable from run to run) without building indices nobody reads.
        config.split_matrix = [m if i == matrix_keep else None for i, m in enumerate(config.split_matrix)]
    return config


def _one_epoch(cfg: Config, tokenizer, path: str, which: int, carve: bool):
    """megatron's GPTDataset over split `which` (0 train, 1 valid) of one source, one epoch:
    num_samples 1 makes megatron take a single pass over the documents (more only when they
    hold less than one sequence), so the indices and their cache do not depend on the run."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    split = cfg.data.split if carve else ("100,0,0", "0,100,0")[which]
    config = _gpt_config(cfg, tokenizer, path, split, matrix_keep=which if carve else None)
    sizes = [0, 0, 0]
    sizes[which] = 1
    return BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()[which]


def _blend(cfg: Config, tokenizer, paths: list[str], weights: list[float], which: int, carve: bool,
           size: int) -> Blend:
    """The sources' epochs blended by `weights`; a source's later epochs are reshuffled with a
    seed of (train.seed, split, its place in the list, epoch)."""
    seed = cfg.train.seed % 2**32
    epochs = [SourceEpochs(_one_epoch(cfg, tokenizer, path, which, carve), (seed, which, k))
              for k, path in enumerate(paths)]
    return Blend(epochs, weights, size)


@dataclass(frozen=True)
class _Part:
    path: str
    lang: str
    documents: int
    tokens: int


def _with_docs(parts: list[_Part], matrix: list | None, which: int) -> list[_Part]:
    """The parts that have documents (in split `which` when carving) and tokens."""
    out = []
    for p in parts:
        if matrix is not None:
            lo, hi = doc_range(p.documents, matrix, which)
            if hi <= lo:
                continue
        if p.tokens > 0:
            out.append(p)
    return out


def build_datasets(cfg: Config, tokenizer, *, train_samples: int, valid_samples: int) -> DataBundle:
    """Build the blended training dataset and one validation dataset per language, of
    `train_samples` and `valid_samples` samples: how far a run reads, not what it reads (sample
    i is the same for any length)."""
    if train_samples <= 0:
        raise ValueError(f"train_samples must be positive (got {train_samples})")
    sources, valid_sources = resolve_sources(cfg, tokenizer)
    for s in sources + valid_sources:
        check_source(s.path, tokenizer)
    counts = {s.path: source_tokens(s.path) for s in sources + valid_sources}
    carve = not valid_sources
    matrix = split_matrix(cfg.data.split) if carve else None
    data = cfg.data

    # Sources with no training documents after the split (tiny shards) leave the blend, and
    # the plan is made over the rest so that planned shares are the blend's weights.
    parts = {s.path: _Part(s.path, s.lang, *counts[s.path]) for s in sources}
    kept = {p.path for p in _with_docs(list(parts.values()), matrix, 0)}
    for s in sources:
        if s.path not in kept:
            log.warning("source %s has no training data (split %s): left out", s.path, data.split)
    train_sources = [s for s in sources if s.path in kept]
    plan = plan_mixture(train_sources, data.multipliers, data.default_multiplier, counts=counts)
    blend_plan = [p for p in plan.sources if p.weight > 0]
    if not blend_plan:
        raise ValueError("no source has training data (check data.sources, data.split, multipliers)")

    languages = sorted({s.lang for s in sources} | {s.lang for s in valid_sources})
    lang_index = {lang: i for i, lang in enumerate(languages)}
    train_blend = _blend(cfg, tokenizer, [p.path for p in blend_plan], [p.weight for p in blend_plan],
                         0, carve, train_samples)
    train = LanguageDataset(train_blend, [lang_index[p.lang] for p in blend_plan], [p.path for p in blend_plan],
                            tokenizer)

    valid: dict[str, torch.utils.data.Dataset] = {}
    if valid_samples > 0 and (not carve or matrix[1] is not None):
        pool = list(parts.values()) if carve else [_Part(s.path, s.lang, *counts[s.path]) for s in valid_sources]
        for lang in languages:
            members = _with_docs([p for p in pool if p.lang == lang], matrix, 1)
            if not members:
                log.warning("no validation data for language %s", lang)
                continue
            # Within a language, sources are blended in proportion to their tokens.
            vds = _blend(cfg, tokenizer, [p.path for p in members], [float(p.tokens) for p in members],
                         1, carve, valid_samples)
            valid[lang] = LanguageDataset(vds, [lang_index[lang]] * len(members), [p.path for p in members], tokenizer)

    return DataBundle(train, valid, languages, plan.shares(), plan, sources)
