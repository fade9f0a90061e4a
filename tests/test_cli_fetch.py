"""``micronet fetch``: locates verified assets, rejects unknown names before doing anything."""

from micronet_lib.cli import main


def test_fetch_prints_verified_path(asset, capsys):
    expected = asset("micronet_v1_pr_60.t7")
    assert main(["fetch", "micronet_v1_pr_60.t7"]) == 0
    name, path = capsys.readouterr().out.strip().split("\t")
    assert name == "micronet_v1_pr_60.t7" and path == str(expected)


def test_fetch_unknown_name_is_one_error_line(capsys):
    assert main(["fetch", "micronet_v3.t7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown asset" in err[0] and "micronet_v1_pr_60.t7" in err[0]
