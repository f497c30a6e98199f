import shutil

import pytest

from ecrs.cli import main
from ecrs.client.cli import format_table, unknown_features_note
from ecrs.client.cli import main as client_main
from ecrs.client.client import RecommendClient, RecommendedItem
from ecrs.errors import ConfigError, DataError
from ecrs.training.checkpoint import Checkpoint


def test_generate_writes_data_set(tmp_path, capsys):
    out = tmp_path / "shop"
    code = main(
        [
            "data",
            "generate",
            "--out",
            str(out),
            "--users",
            "20",
            "--items",
            "10",
            "--interactions",
            "50",
        ]
    )
    assert code == 0
    assert (out / "schema.json").exists()
    assert "20 users, 10 items and 50 interactions" in capsys.readouterr().out


def test_non_positive_size_is_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "generate", "--out", "x", "--users", "0"])
    assert info.value.code == 2
    assert "--users: 0 is below 1; pass 1 or more" in capsys.readouterr().err


def test_out_of_range_port_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["stack", "start", "--redis-port", "70000"])
    assert "70000 is not a TCP port" in capsys.readouterr().err


def test_load_without_stack_is_one_line_error(tmp_path, capsys):
    code = main(["--state-dir", str(tmp_path), "load", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ecrs: error: ")
    assert "stack start" in err
    assert len(err.strip().splitlines()) == 1


def test_train_on_missing_folder_names_it(tmp_path, capsys):
    code = main(
        ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "ck")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"{tmp_path / 'nope'} does not exist" in err


def test_format_table_aligns_columns():
    items = [
        RecommendedItem("sku1", 0.91234, {"brand": "Acme", "title": "Shoe"}),
        RecommendedItem("sku22", 0.5, {"brand": "Zeta"}),
    ]
    lines = format_table(items).splitlines()
    assert lines[0].split() == ["#", "item_id", "score", "brand", "title"]
    assert lines[2].split() == ["1", "sku1", "0.9123", "Acme", "Shoe"]
    assert lines[3].split() == ["2", "sku22", "0.5000", "Zeta"]
    assert format_table([]) == "(no items)"


def test_client_rejects_non_object_features(capsys):
    code = client_main(["--url", "127.0.0.1:9", "recommend", "--features", "[1]"])
    assert code == 1
    assert "--features must be a JSON object" in capsys.readouterr().err


def test_client_unreachable_server_is_one_line(capsys):
    code = client_main(
        ["--url", "127.0.0.1:9", "--timeout", "2", "recommend", "--user-id", "u1"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ecrs-client: error: UNAVAILABLE: ")
    assert len(err.strip().splitlines()) == 1


def test_unknown_features_note_shows_values():
    note = unknown_features_note(["age"], {"age": 25, "sex": "F"})
    assert note.startswith("ecrs-client: note: ")
    assert "age=25" in note
    assert "sex" not in note


def test_note_without_features_lists_names():
    assert "age, city" in unknown_features_note(["age", "city"], None)


def test_load_triton_url_needs_repository(tmp_path, capsys):
    code = main(
        ["load", "--data", str(tmp_path), "--triton-url", "127.0.0.1:8001"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "--triton-url 127.0.0.1:8001 applies to --repository loads only" in err


def test_load_with_invalid_store_setting_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ECRS_REDIS_CLUSTER", "sometimes")
    code = main(["load", "--data", str(tmp_path), "--repository", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "ECRS_REDIS_CLUSTER='sometimes' is invalid" in err


def test_load_error_hides_redis_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ECRS_REDIS_URL", "ftp://ecrs:hunter2@127.0.0.1:9")
    code = main(["load", "--data", str(tmp_path), "--repository", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "hunter2" not in err
    assert "ftp://ecrs:***@127.0.0.1:9" in err


def test_export_rejects_unknown_device(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", "x", "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_client_missing_tls_file_names_it(tmp_path):
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=f"the TLS file {missing} does not exist"):
        RecommendClient("127.0.0.1:1", root_certificates=str(missing))


def test_rollout_of_damaged_checkpoint_names_the_step(tmp_path, capsys):
    data = tmp_path / "shop"
    generate = ["data", "generate", "--out", str(data), "--users", "20"]
    assert main([*generate, "--items", "10", "--interactions", "50"]) == 0
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "two_tower.pdparams").write_bytes(b"not a paddle file")
    code = main(
        [
            "--state-dir",
            str(tmp_path / "state"),
            "rollout",
            "--checkpoint",
            str(damaged),
            "--gate-data",
            str(data),
        ]
    )
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("ecrs: error: rollout step 'export' failed: ")
    assert str(damaged) in error[-1]


def test_truncated_checkpoint_weights_are_a_data_error(small_checkpoint, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(small_checkpoint, damaged)
    weights = damaged / "two_tower.pdparams"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(DataError, match="cannot be read") as info:
        Checkpoint.load(damaged)
    assert str(weights) in str(info.value)
