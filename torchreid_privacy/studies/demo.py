"""``torchreid-privacy demo``: the main job on the embedded dataset.

Makes the synthetic Market-1501-layout set if missing, trains ``baseline`` (C on O and the
conventional M, mosaic 24: the yardstick), ``progressive`` (the paper's method) and ``learned-mosaic``
(the shipped sealed config, ``configs/quickstart_sealed.yaml``: a learned mosaic, recovery by the
sealed original) at quickstart size (small backbone, small generators, CPU-sized), evaluates
each on the test split, then attacks the sealed run *and the conventional M*: a third-party
ReID model trained on raw images (O->P next to O->M), and inversion attackers trained on N
leaked (P, O) and (M, O) pairs. It checks sealed recovery on the test query folder (exact
bytes with the key; wrong key and tampering refused), writes the rank-list / t-SNE views of
the progressive run, prints every table and the wall time of each phase, and writes
``OUTPUT/results.json``. ``joint``, ``progressive-sealed`` (a U-Net G with an inversion
adversary) and ``progressive-keyed`` (a key-conditioned decoder) are available with ``--modes``.
The demo's secret key is ``OUTPUT/secret.key`` (mode 0600).
"""
from __future__ import annotations

import os
import time
from importlib import resources
from typing import Any, Dict, Optional, Sequence

from torchreid_privacy.utils import atomic
from torchreid_privacy.config import load_config
from torchreid_privacy.metrics.settings import SETTINGS
from torchreid_privacy.studies.frontier import LEARNED_VARIANTS, SHIPPED_SEALED
from torchreid_privacy.studies.report import (format_psnr_rows, format_reid_attack, format_table,
                                              format_vs_yardstick, summarize)

QUICKSTART = "quickstart.yaml"
KEYED, SEALED, UNET_SEALED = "progressive-keyed", SHIPPED_SEALED, "progressive-sealed"
MODES = ("baseline", "joint", "progressive", SEALED, UNET_SEALED, KEYED)
# joint (the paper's ablation without upgrades) left out of the default to make room for the shipped
# sealed config without weakening its attacks (the demo took 197 s on 2 quiet cores; see DEMO_TRAIN)
DEFAULT_MODES = ("baseline", "progressive", SEALED)
MODE_OVERRIDES = {
    "baseline": ["privacy.mode", "baseline"],
    "joint": ["privacy.mode", "joint"],
    "progressive": ["privacy.mode", "progressive"],
    SEALED: list(LEARNED_VARIANTS[SHIPPED_SEALED]),  # = quickstart_sealed.yaml (tests/test_frontier.py)
    UNET_SEALED: ["privacy.mode", "progressive", "privacy.recovery", "sealed", "privacy.inversion.enabled", "true"],
    # measured: InstanceNorm keys better than BatchNorm (22.2 vs 20.9 dB right-key O-R)
    KEYED: ["privacy.mode", "progressive", "privacy.recovery", "keyed", "privacy.decoder.norm", "instance"],
}
# The demo trains 12 epochs (the quickstart config's 20 with the same LR drop, at 3/4): measured on
# 2 quiet cores, 305 s -> 199 s for the whole demo with the same picture (every learned mode well
# above the baseline's O->P, recovery, attacks); at 10 epochs (181 s) the learned modes' margin over
# the baseline shrinks to within a seed's spread. A user's overrides come after and win.
DEMO_TRAIN = ["train.max_epoch", "12", "train.stepsize", "[9]"]
# The demo's set has the 100 queries of the embedded set's first 50 test identities, not its 200
# test-only ones: measured on 2 quiet cores, the 500-query split takes the demo from under 180 s to
# 239 s (every evaluation and attack scores 4x the images). The demo is one seed and shows the
# picture; the evidence (3 seeds, 500 queries, paired intervals) is `frontier`'s.
DEMO_EXTRA_TEST_IDS = 0
ATTACK_PAIRS = (16, 64, 256)
ATTACK_STEPS = 300
THIRD_PARTY_EPOCHS = 10  # the raw-trained third party: its O->O is already above the runs' at 10


def packaged_config(name: str) -> str:
    """Path of a YAML shipped in ``torchreid_privacy.configs`` (the repo's ``configs/``)."""
    return str(resources.files("torchreid_privacy.configs").joinpath(name))


def _demo_key(output: str) -> bytes:
    """The demo's own key: made once with keygen's rules, reused when the demo runs again."""
    from torchreid_privacy.sealing.keys import read_key_file, write_key_file

    path = os.path.join(output, "secret.key")
    if not os.path.exists(path):
        write_key_file(path)
    return read_key_file(path, flag=path)


def _psnr_ssim(image: Dict[str, Any], pair: str) -> Dict[str, float]:
    return {"psnr": float(image[pair]["psnr"]), "ssim": float(image[pair]["ssim"])}


class _Clock:
    """Wall time of each phase, printed at the end."""

    def __init__(self) -> None:
        self.start, self.phases = time.time(), {}

    def run(self, name: str, fn, *args, **kwargs):
        t0 = time.time()
        out = fn(*args, **kwargs)
        self.phases[name] = round(time.time() - t0, 1)
        return out

    def line(self) -> str:
        return (f"total {time.time() - self.start:.0f}s: "
                + ", ".join(f"{name} {t:.0f}s" for name, t in self.phases.items()))


def run_demo(output: str, data_root: Optional[str] = None, modes: Sequence[str] = DEFAULT_MODES,
             config_file: Optional[str] = None, overrides: Sequence[str] = (), attacks: bool = True,
             attack_pairs: Sequence[int] = ATTACK_PAIRS, attack_steps: int = ATTACK_STEPS,
             views: bool = True, third_party_epochs: int = THIRD_PARTY_EPOCHS) -> Dict[str, Any]:
    """Train every mode, attack the sealed (else keyed, else progressive) run, print and save the tables."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"--modes: unknown mode '{mode}' ({', '.join(MODES)})")
    data_root = data_root or os.path.join(output, "data")
    clock = _Clock()
    os.makedirs(output, exist_ok=True)
    dataset_dir = clock.run("data", _demo_set, data_root)
    key = _demo_key(output) if {KEYED, SEALED, UNET_SEALED} & set(modes) else None
    results: Dict[str, Any] = {}
    for mode in modes:
        res = clock.run(mode, _train, mode, output, data_root, config_file, overrides, key)
        target = next(iter(res["test"]))
        results[mode] = summarize(res["test"][target])
        results[mode]["upgrades"] = len(res["upgrades"])
        print(f"[{mode}] done in {clock.phases[mode]:.0f}s, upgrades: {len(res['upgrades'])}", flush=True)
    if KEYED in results:
        image = results[KEYED]["image"]
        results["keyed_recovery"] = {"right_key": _psnr_ssim(image, "O-R"),
                                     "wrong_key": _psnr_ssim(image, "O-R wrong key"),
                                     "protected": _psnr_ssim(image, "O-P")}
        if "progressive" in results:
            results["keyed_recovery"]["unkeyed"] = _psnr_ssim(results["progressive"]["image"], "O-R")
    victim = next((m for m in (SEALED, UNET_SEALED, KEYED, "progressive", "joint") if m in results), None)
    if attacks and victim:
        results["attack"] = clock.run("attacks", _attack, os.path.join(output, victim),
                                      key if victim == KEYED else None, attack_pairs, attack_steps,
                                      third_party_epochs)
        results["attack"]["victim"] = victim
    sealed_mode = next((m for m in (SEALED, UNET_SEALED) if m in results), None)
    if sealed_mode:
        from torchreid_privacy.attacks.sealed import sealed_check
        from torchreid_privacy.inference import load

        query = os.path.join(str(dataset_dir), "Market-1501-v15.09.15", "query")
        work = os.path.join(output, sealed_mode, f"sealed-check-{int(time.time() * 1000)}")
        results["sealed"] = clock.run("sealed check", sealed_check, load(os.path.join(output, sealed_mode)), query,
                                      work, key)
        results["sealed"]["mode"] = sealed_mode
    if views and "progressive" in results:
        results["views"] = clock.run("views", _views, os.path.join(output, "progressive"))
    results["seconds"] = dict(clock.phases)
    atomic.write_json(os.path.join(output, "results.json"), _json_shape(results))
    _print(results, modes, attack_pairs, output)
    print(f"\nwall time: {clock.line()}")
    return results


def _demo_set(root: str) -> str:
    """The synthetic set already under ``root`` (any parameters: e.g. ``make-data``'s), else one
    made with the demo's 100 queries."""
    from torchreid_privacy.data.synthetic import DATASET_DIR, make_synthetic_market, read_manifest

    existing = os.path.join(root, DATASET_DIR)
    if read_manifest(existing) is not None:
        return existing
    return str(make_synthetic_market(root, extra_test_ids=DEMO_EXTRA_TEST_IDS))


def _train(mode: str, output: str, data_root: str, config_file: Optional[str], overrides: Sequence[str],
           key: Optional[bytes]) -> Dict[str, Any]:
    from torchreid_privacy.builder import build_privacy_engine

    cfg = load_config(config_file or packaged_config(QUICKSTART),
                      ["data.root", data_root, "data.save_dir", os.path.join(output, mode), "privacy.enabled", "true",
                       # the demo writes the progressive run's views itself (one pass, not four)
                       "privacy.tensorboard_views", "false", *DEMO_TRAIN, *MODE_OVERRIDES[mode], *overrides])
    engine = build_privacy_engine(cfg)
    if engine.keyed:
        engine.set_key(key)
    return engine.run_privacy(save_dir=cfg.data.save_dir, max_epoch=cfg.train.max_epoch,
                              print_freq=cfg.train.print_freq)


def _attack(run: str, key: Optional[bytes], pairs: Sequence[int], steps: int,
            third_party_epochs: int = THIRD_PARTY_EPOCHS) -> Dict[str, Any]:
    from torchreid_privacy.attacks import recovery_attack, reid_attack

    reid = reid_attack(None, run, os.path.join(run, "attack-reid"), key=key, max_epoch=third_party_epochs)
    print(f"[attack reid] O->O {100 * reid['O->O']['R1']:.1f}, O->P {100 * reid['O->P']['R1']:.1f}, "
          f"O->M {100 * reid['O->M']['R1']:.1f}", flush=True)
    recover = recovery_attack(run, pairs, steps=steps, key=key)
    print(f"[attack recover] best attacker on P {max(recover[str(n)]['psnr'] for n in pairs):.2f} dB, "
          f"on M {max(recover['M'][str(n)]['psnr'] for n in pairs):.2f} dB", flush=True)
    return {"reid": reid, "recover": recover}


def _views(run: str) -> Dict[str, Any]:
    """Rank lists of the four settings, the t-SNE and the O | M | P | R grid of a run."""
    from torchreid_privacy.folders.visualize import view_lines, write_views

    paths = write_views(run, os.path.join(run, "views"))
    return {"lines": view_lines(paths), "tsne": str(paths["tsne"]), "grid": str(paths.get("grid", "")),
            "ranklists": [str(p) for p in paths["ranklists"]]}


def _print(results: Dict[str, Any], modes: Sequence[str], attack_pairs: Sequence[int], output: str) -> None:
    print()
    print(format_table({m: results[m] for m in modes}))
    print("\nrank-1 in %, PSNR in dB (test split; weights selected on the validation split)")
    if "attack" in results:
        attack = results["attack"]
        print(f"\nattacks on the {attack['victim']} run and on the conventional M:")
        print(format_reid_attack(attack["reid"]))
        rec = attack["recover"]
        rows = {"key holder" + (" (sealed: exact bytes)" if rec["authorized"].get("exact") else " (G_R)"):
                rec["authorized"], "P itself (no attack)": rec["protected"], "M itself (no attack)": rec["conventional"]}
        for n in attack_pairs:
            rows[f"attacker on P, {n} pairs"] = rec[str(n)]
            rows[f"attacker on M, {n} pairs"] = rec["M"][str(n)]
        print()
        print(format_psnr_rows(f"inversion attack ({rec['steps']} steps)", rows))
    if "baseline" in results and "attack" in results:
        print()
        print(format_vs_yardstick(results["baseline"], results[results["attack"]["victim"]], results["attack"]["victim"],
                                  results["attack"]["recover"], max(attack_pairs)))
    if "sealed" in results:
        s = results["sealed"]
        print(f"\nsealed recovery on {s['files']} test images: exact {s['exact']}, wrong key refused "
              f"{s['wrong_key_rejected']}, tampering refused {s['tamper_rejected']}, "
              f"payload {s['overhead_bytes_mean']:.0f} bytes per image ({s['beyond_original_bytes_mean']:.0f} "
              "beyond the original file's own)")
    if "keyed_recovery" in results:
        print()
        print(format_psnr_rows("keyed recovery O-R", results["keyed_recovery"]))
    if "views" in results:
        print("\nviews of the progressive run:\n" + "\n".join(results["views"]["lines"]))
    print(f"results: {os.path.join(output, 'results.json')}; grids: {output}/<mode>/grids/")


def _json_shape(results: Dict[str, Any]) -> Dict[str, Any]:
    """results.json: per mode; ``attack`` (reid incl. O->M, recover for P and M), ``sealed``, ``keyed``."""
    out = {k: v for k, v in results.items() if k not in ("attack", "keyed_recovery")}
    if "attack" in results:
        reid, rec = results["attack"]["reid"], results["attack"]["recover"]
        pick = lambda d: {k: {"psnr": v["psnr"], "ssim": v["ssim"]} for k, v in d.items()  # noqa: E731
                          if isinstance(v, dict) and "psnr" in v}
        out["attack"] = {
            "victim": results["attack"]["victim"],
            "reid": {**{s: reid[s] for s in (*SETTINGS, "O->M")}, "epochs": reid["epochs"]},
            "recover": {**pick(rec), "M": pick(rec["M"]), "steps": rec["steps"], "vs_m_db": rec["vs_m_db"]},
        }
    if "keyed_recovery" in results:
        out["keyed"] = results["keyed_recovery"]
    return out
