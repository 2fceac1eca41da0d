"""benchmarks/view_conditioned.py: p(x|z,y,v) reads each batch's own views, and the quick run on rsna-1500."""

import csv
import json
import sys
from pathlib import Path

import pyro
import pytest
import torch
from conftest import SMALL_MODEL

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "rsna-1500"
sys.path.insert(0, str(ROOT / "benchmarks"))


def traced_log_probs(model, x_l, y_l, x_u, views):
    """log p(x|z,y,v) of both batches' sites, per image, with the guide's draws replayed (eval mode)."""
    model.views = views
    pyro.set_rng_seed(0)
    guide = pyro.poutine.trace(model.semi_supervised_guide).get_trace(x_l, y_l, x_u)
    trace = pyro.poutine.trace(pyro.poutine.replay(model.semi_supervised_model, trace=guide)).get_trace(x_l, y_l, x_u)
    return {name: trace.nodes[name]["fn"].log_prob(trace.nodes[name]["value"]) for name in ("labelled/x", "unlabelled/x")}


def test_the_decoder_reads_the_views_of_its_own_batch():
    from view_conditioned import ViewConditionedADGM

    torch.manual_seed(0)
    model = ViewConditionedADGM(num_classes=2, image_size=16, **SMALL_MODEL).eval()
    x_l, y_l, x_u = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 0, 1]), torch.rand(5, 1, 16, 16)
    ap_l, ap_u = torch.zeros(4, dtype=torch.int64), torch.zeros(5, dtype=torch.int64)
    with torch.no_grad():
        base = traced_log_probs(model, x_l, y_l, x_u, {"labelled_data": ap_l, "unlabelled_data": ap_u})
        flipped = traced_log_probs(model, x_l, y_l, x_u, {"labelled_data": ap_l, "unlabelled_data": 1 - ap_u})
    assert base["unlabelled/x"].shape == (5,)  # y drawn from the guide (not enumerated outside TraceEnum_ELBO)
    torch.testing.assert_close(flipped["labelled/x"], base["labelled/x"])  # the labelled batch keeps its views
    assert (flipped["unlabelled/x"] - base["unlabelled/x"]).abs().min() > 0  # every unlabelled image's fit moved
    # under enumeration: y (K, 1, K) and z (K, B, Z) broadcast with the batch's views (B,), and y still matters
    model.image_decoder.view = ap_u
    with torch.no_grad():
        out = model.image_decoder(z=torch.randn(5, 8).expand(2, 5, 8), y=torch.eye(2).view(2, 1, 2))  # one z, two classes
    assert out.shape == (2, 5, model.likelihood.params_per_channel, 16, 16)
    assert (out[0] - out[1]).abs().amax(dim=(1, 2, 3)).min() > 0


def test_a_batch_without_views_is_refused():
    from view_conditioned import ViewDecoder

    decoder = ViewDecoder(torch.nn.Identity(), 2)
    with pytest.raises(RuntimeError, match="no views set"):
        decoder(z=torch.zeros(1, 3), y=torch.zeros(1, 2))


@pytest.mark.skipif(not (SOURCE / "labels.csv").is_file(), reason="../shared/data/rsna-1500 is absent")
def test_quick_run_trains_evaluates_and_reads_back(tmp_path):
    import view_conditioned

    rows = view_conditioned.main(["--quick", "--out", str(tmp_path)])
    assert [(r["method"], r["labels_per_class"], r["seed"]) for r in rows] == [("adgm-view", 5, 0)]
    run_dir = Path(rows[0]["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["method"] == "adgm-view" and config["model"]["custom_networks"] == ["image_decoder"]
    with open(run_dir / "metrics.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["unlabelled_bound"]) < 0  # the bound diagnostics ran with views
    rankings = json.loads((run_dir / "view_rankings.json").read_text())  # the bound's ranking by class and by view
    assert [r["checkpoint"] for r in rankings] == ["best", "last"]
    assert all(0.0 <= r[f"{m}_{k}_auc"] <= 1.0 for r in rankings for m in ("q", "bound") for k in ("class", "view", "class_pa", "class_ap"))
    assert "| view-conditioned | adgm-view | 5 | unlabelled | best | 1 |" in (tmp_path / "view_rankings.md").read_text()
    assert rankings[0]["images"] == 1039 and 0.55 < rankings[0]["ap_share_abnormal"] < 0.65  # rsna-1500: AP is 61% of the abnormal
    for split in ("test", "unlabelled"):
        assert json.loads((run_dir / f"evaluation-{split}.json").read_text())["split"] == split
    # the seed fixes the run: the same seed trains the same model again
    same = view_conditioned.main(["--quick", "--out", str(tmp_path / "again")])
    def trained(folder):
        with open(folder / "metrics.csv", newline="") as handle:
            return [(r["train_loss"], r["unlabelled_bound"], r["val_accuracy"]) for r in csv.DictReader(handle)]

    assert trained(Path(same[0]["run_dir"])) == trained(run_dir)
    # read back, not trained again, and set beside another method's rows on the same draw
    other = tmp_path / "other.csv"
    other.write_text("task,method,labels_per_class,seed,test_accuracy\n2class,supervised,5,0,0.25\n3class,supervised,5,0,0.9\n")
    again = view_conditioned.main(["--quick", "--out", str(tmp_path), "--summarise-only", "--compare", f"baseline={other},task=2class",
                                   "--baseline", "baseline"])  # fmt: skip
    assert again[0]["test_accuracy"] == rows[0]["test_accuracy"]
    table = (tmp_path / "view_conditioned_2class.md").read_text().splitlines()
    assert table[2].startswith("| 5 | baseline | 1 | 0.250 | - |")
    assert table[3].startswith(f"| 5 | adgm-view | 1 | {rows[0]['test_accuracy']:.3f} | {100 * (rows[0]['test_accuracy'] - 0.25):+.1f} |")
    with pytest.raises(SystemExit, match="no row of"):
        view_conditioned.main(["--quick", "--out", str(tmp_path), "--summarise-only", "--compare", f"b={other},task=4class"])
