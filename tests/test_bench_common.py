"""The helpers every benchmark shares (``orbitforge.bench``): printing the one JSON object and
running a part in a fresh process."""

import json
import os

from orbitforge.bench import print_result, run_child


def test_print_result_is_one_line_with_json_and_readable_without(capsys):
    result = {"bench": "x", "psnr": [21.5, 22.0], "nested": {"ok": True}}
    print_result(result, compact=True)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == result
    print_result(result, compact=False)
    out = capsys.readouterr().out
    assert out.count("\n") > 3 and json.loads(out) == result


def test_run_child_reads_the_last_json_line_or_reports_the_failure(tmp_path):
    (tmp_path / "child_ok.py").write_text(
        'import sys\nprint("warming up")\nprint(\'{"a": 0}\')\nprint(sys.argv[1:])\n'
        'print(\'{"a": 1}\')\nprint("done")\n')
    (tmp_path / "child_fails.py").write_text(
        'import sys\nprint(\'{"a": 1}\')\nsys.exit("the input file is broken")\n')
    (tmp_path / "child_silent.py").write_text('print("no json here")\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    assert run_child("child_ok", "--flag", env=env) == {"a": 1}
    failed = run_child("child_fails", env=env, part="encode", chunk=4)
    assert failed["part"] == "encode" and failed["chunk"] == 4
    assert failed["error"].startswith("exit 1: ") and "the input file is broken" in failed["error"]
    silent = run_child("child_silent", env=env)
    assert silent == {"error": "exit 0: no json here"}
