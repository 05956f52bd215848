"""`--config-dir DIR` on the other CLIs that compose configs (alia-train's is in test_train.py,
with a real training run): alia-plan and alia-data mixture, run through their `main()`."""

from __future__ import annotations

import shutil

from alia_train.cli import data, plan
from alia_train.exit_codes import EXIT_OK
from alia_train.data.sample_corpus import sample_corpus_dir, sample_tokenizer_path


def test_alia_plan_uses_a_cluster_of_ones_own(tmp_path, capsys):
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "my_site.yaml").write_text(
        "name: my_site\ngpus_per_node: 8\nnodes: 2\ngpu_memory_gb: 141\npeak_tflops: 989\nassumed_mfu: 0.4\n")
    assert plan.main(["--config-dir", str(tmp_path), "+model=salamandra_2b", "cluster=my_site"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "salamandra_2b on my_site: 2 node(s) x 8 GPU(s) = 16 GPUs of 141 GiB" in out


def test_alia_data_mixture_reads_the_tokenize_output_as_a_data_group(tmp_path, capsys):
    corpus = sample_corpus_dir()
    prefix = tmp_path / "shards" / "mix"
    assert data.main(["tokenize", "--input", str(corpus / "eu.jsonl"), str(corpus / "gl.jsonl"),
                      "--tokenizer", str(sample_tokenizer_path()), "--output-prefix", str(prefix),
                      "--workers", "0", "--no-progress"]) == 0
    confs = tmp_path / "confs"
    (confs / "data").mkdir(parents=True)
    shutil.copy(f"{prefix}.data.yaml", confs / "data" / "my_mix.yaml")
    capsys.readouterr()
    assert data.main(["mixture", "--config-dir", str(confs), "data=my_mix", "multipliers.eu=3"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.split()}
    assert set(rows) >= {"eu", "gl"} and "es" not in rows
    # eu at 3x and gl at the default 2x (Salamandra's multipliers) over about equal token counts.
    eu_share, gl_share = (float(rows[lang][3].rstrip("%")) for lang in ("eu", "gl"))
    assert 55 < eu_share < 65 and 35 < gl_share < 45, rows
    # A run's config.yaml from before data.num_workers was removed still reads.
    old = tmp_path / "old_run_config.yaml"
    old.write_text(f"data:\n  sources:\n  - {{path: {prefix}_eu, lang: eu}}\n  num_workers: 0\n")
    assert data.main(["mixture", str(old)]) == 0
    assert "eu" in capsys.readouterr().out
