from taalasc.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Exit codes: 0 ok, 1 bad input or internal error, 2 a check failed, 130 " \
           "interrupted." in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 1
    assert capsys.readouterr().err == "error: taalasc: No such command 'no-such-command'.\n"
