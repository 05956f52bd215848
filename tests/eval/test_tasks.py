"""Which tasks alia-eval runs: the named sets (configs/eval), the shipped alia_langid task (built
from the sample corpus, loadable with no network) and lm-evaluation-harness's own index, where
the four Iberian benches must resolve (the index reads task YAMLs only: no data)."""

from __future__ import annotations

import pytest

from alia_train.data.sample_corpus import sample_corpus_dir
from alia_train.eval import harness, langid_items, task_sets
from alia_train.eval.errors import EvalError

IBERIAN = ["spanish_bench", "catalan_bench", "basque_bench", "galician_bench"]


def test_the_shipped_items_are_what_the_builder_makes_from_the_sample_corpus():
    from alia_train.eval.tasks.alia_langid import langid

    quads = langid_items.build_quads(sample_corpus_dir())
    assert langid_items.ITEMS_FILE.read_text(encoding="utf-8") == langid_items.quads_text(quads)
    items = langid.items(quads)
    assert len(items) == 4 * langid_items.QUADS and langid.LANGS == langid_items.LANGS
    for quad in range(langid_items.QUADS):
        four = [i for i in items if i["quad"] == quad]
        # One passage per language, shared by the quad; each item's right answer is its own.
        assert [i["lang"] for i in four] == list(langid.LANGS)
        assert all(i["contexts"] == four[0]["contexts"] for i in four)
        assert [i["gold"] for i in four] == [0, 1, 2, 3]
        assert [i["contexts"][i["gold"]] for i in four] == [quads[quad]["passages"][x] for x in langid.LANGS]


def test_task_sets_expand_in_order_without_duplicates(tmp_path):
    assert task_sets.expand("local") == ["alia_langid"]
    iberian = task_sets.expand("iberian")
    assert iberian[:4] == IBERIAN and "arc_easy" in iberian
    assert task_sets.expand("local,arc_easy,local , piqa") == ["alia_langid", "arc_easy", "piqa"]
    own = tmp_path / "mine" / "eval"
    own.mkdir(parents=True)
    (own / "quick.yaml").write_text("tasks: [alia_langid_eu, arc_easy]\n")
    assert task_sets.expand("quick", [str(tmp_path / "mine")]) == ["alia_langid_eu", "arc_easy"]
    assert "quick" in task_sets.set_names([str(tmp_path / "mine")])
    (own / "broken.yaml").write_text("tasks: arc_easy\n")
    with pytest.raises(EvalError, match="broken.yaml: needs `tasks:`"):
        task_sets.expand("broken", [str(tmp_path / "mine")])
    with pytest.raises(EvalError, match="no task named"):
        task_sets.expand(" , ")


def test_local_tasks_load_offline_without_lm_evals_own_index(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tm = harness.task_manager(["alia_langid"], [])
    assert len(tm.all_tasks) < 20  # the shipped tasks alone: lm-eval's ~15,000 were not indexed
    loaded = harness.load_tasks(tm, "alia_langid")
    assert sorted(loaded["tasks"]) == [f"alia_langid_{lang}" for lang in ("ca", "es", "eu", "gl")]
    assert sum(len(t.eval_docs) for t in loaded["tasks"].values()) == 4 * langid_items.QUADS


def test_the_iberian_benches_and_every_name_of_the_iberian_sets_resolve_in_lm_evals_index():
    names = task_sets.expand("iberian,iberian_mc")
    tm = harness.task_manager(names, [])
    harness.check_names(tm, names, task_sets.set_names())  # raises on an unknown name
    for name in task_sets.expand("iberian_mc"):  # the quick set: log-likelihood tasks only
        kinds = {(tm.task_index[t].cfg or {}).get("output_type") for t, _ in harness._leaf_datasets(tm, name)}
        assert kinds == {"multiple_choice"}, (name, kinds)
    for bench in IBERIAN:
        assert tm.task_index[bench].kind.name == "GROUP", bench
        leaves = harness._leaf_datasets(tm, bench)
        # Tasks and the Hub datasets they read (a few build theirs in Python: no dataset_path).
        assert len(leaves) >= 8 and sum(bool(d) for _, d in leaves) >= 0.9 * len(leaves), (bench, leaves)
    with pytest.raises(EvalError, match="unknown task 'spanish_bnch'.*did you mean spanish_bench"):
        harness.check_names(tm, ["spanish_bnch"], ["iberian", "local"])
    # What a missing dataset's error names: the leaf task that reads it, and the download command.
    line = harness.offline_message(tm, "catalan_bench", "projecte-aina/arc_ca", "iberian")
    assert line.startswith("task arc_ca_") and "(in catalan_bench)" in line
    assert line.endswith("alia-eval --download --tasks iberian") and "\n" not in line
