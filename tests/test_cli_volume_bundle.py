"""`medexport inspect`, `selftest` and `bench` on the volume bundle (hippocampus-mr), in-process."""
from __future__ import annotations

import json

from medexport.export import cli


def test_inspect_shows_the_volume_models_validation(hippo_bundle, capsys):
    assert cli.main(["inspect", str(hippo_bundle)]) == 0
    out = capsys.readouterr().out
    assert "model      hippocampus-mr" in out and "task volume_segmentation" in out
    dice = json.loads((hippo_bundle / "manifest.json").read_text())["provenance"]["training"]["validation"]["dice"]
    assert f"dice         {dice['value']:.3f}  (95 % CI {dice['ci95'][0]:.3f}-{dice['ci95'][1]:.3f})" in out
    assert "dice_anterior" in out and "dice_posterior" in out and "total_volume_error" in out


def test_selftest_replays_the_volume_goldens(hippo_bundle, capsys):
    assert cli.main(["selftest", str(hippo_bundle)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("PASS hippocampus-mr [onnxruntime fp32] 2 golden inputs vs the source model: share of "
                           "voxels whose label changed"), line
    assert "4 threads: 0 results differ" in line


def test_bench_measures_a_volume_row(hippo_bundle, tmp_path, capsys):
    assert cli.main(["bench", str(hippo_bundle), "--batch", "2", "--out", str(tmp_path)]) == 0
    row, = json.loads((tmp_path / "bench.json").read_text())
    assert row["model"] == "hippocampus-mr" and row["target"] == "onnxruntime" and row["status"] == "ok"
    assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] and row["throughput"] > 0
    # a whole series read, windows run and blended (timed apart from the raw runs: under load either may be slower)
    assert row["e2e_p50_ms"] > 0
    assert "hippocampus-mr   onnxruntime" in capsys.readouterr().out
