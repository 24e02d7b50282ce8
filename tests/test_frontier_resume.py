"""``frontier --resume`` reuses finished jobs only for the same sweep: the same arguments and the
same config file content; a damaged JSON file of the sweep is an error naming it. Small fake sweep
folders: the sweep's training is stopped before its first job (a real one takes about 50 minutes)."""
import json
import shutil

import pytest

from torchreid_privacy.cli import main
from torchreid_privacy.studies import frontier
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config


class _Stopped(Exception):
    pass


@pytest.fixture
def started(tmp_path, monkeypatch):
    """(config file, output, run): a sweep started by ``run_frontier`` and stopped before its first
    job trains; ``run(resume=True)`` runs it again up to that point."""
    config = tmp_path / "my.yaml"
    shutil.copy(packaged_config(QUICKSTART), config)
    out = tmp_path / "sweep"

    def stop(jobs, workers, desc):
        raise _Stopped(desc)

    monkeypatch.setattr(frontier, "_run_all", stop)

    def run(resume):
        return frontier.run_frontier(str(config), str(out), quick=True, overrides=["train.max_epoch", "1"],
                                     data_root=str(tmp_path / "data"), resume=resume)

    with pytest.raises(_Stopped):
        run(False)
    return config, out, run


def test_the_sweep_records_its_config_files_content(started):
    config, out, run = started
    saved = json.loads((out / frontier.ARGS_FILE).read_text())
    assert saved["config"] == str(config) and saved["config_sha256"] == frontier.file_sha256(str(config))
    assert saved["overrides"] == ["train.max_epoch", "1"]
    with pytest.raises(_Stopped):  # the same sweep: resumed (up to the stop)
        run(True)


def test_resume_refuses_an_edited_config_naming_it(started):
    config, out, run = started
    config.write_text(config.read_text().replace("max_epoch:", "max_epoch: 7 #"))
    hashes = r"\(sha256 [0-9a-f]{12}\.\.\. then, [0-9a-f]{12}\.\.\. now\)"
    with pytest.raises(ValueError, match=rf"--resume: the config file {config} changed since the sweep in {out} "
                                         rf"started {hashes}"):
        run(True)
    saved = json.loads((out / frontier.ARGS_FILE).read_text())
    assert saved["config_sha256"] != frontier.file_sha256(str(config))  # the record is not overwritten


def test_resume_refuses_a_sweep_that_recorded_no_config_content(started):
    config, out, run = started
    saved = json.loads((out / frontier.ARGS_FILE).read_text())
    del saved["config_sha256"]  # frontier_args.json of an older version
    (out / frontier.ARGS_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"config file .*my\.yaml changed .*no sha256 recorded"):
        run(True)


@pytest.mark.parametrize("text", ["", "{\"config\": ", "[1, 2]"])
def test_a_damaged_frontier_args_json_is_one_line_naming_it(started, text, capsys):
    config, out, _ = started
    (out / frontier.ARGS_FILE).write_text(text)
    assert main(["frontier", "--config-file", str(config), "--output", str(out), "--quick", "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("torchreid-privacy: error: ")
    assert f"{out / frontier.ARGS_FILE}: " in err, err
    assert ("not valid JSON (Expecting value: line 1 column" in err) if text != "[1, 2]" else \
        "expected a JSON object" in err


@pytest.mark.parametrize("what", ["third_party", "point", "third_party_eval"])
def test_a_damaged_result_file_is_named_not_reused(tmp_path, what):
    folder = tmp_path / "runs" / "seed0"
    folder.mkdir(parents=True)
    job = frontier.Job(what, 0, config_file="c.yaml", overrides=[], folder=str(folder), threads=1)
    (folder / f"{what}.json").write_text("")  # e.g. a disk that filled up
    with pytest.raises(ValueError) as err:
        frontier._finished(job)
    msg = str(err.value)
    assert msg.startswith(f"{folder / what}.json: not valid JSON (Expecting value: line 1 column 1") and \
        "\n" not in msg and "delete it" in msg
    good = {"seed": 0, "weights": "tp/model.pth.tar"} if what == "third_party" else {"seed": 0}
    if what == "third_party":  # a third-party result without its weights' path would fail the sweep later
        (folder / f"{what}.json").write_text(json.dumps({"seed": 0}))
        with pytest.raises(ValueError, match="not a finished job's result .*with the weights path"):
            frontier._finished(job)
    (folder / f"{what}.json").write_text(json.dumps(good))
    assert frontier._finished(job) == good  # a good one is reused
