"""streamdetect: live Tiny YOLOv2 detection streamed to browsers.

The command line (`python app.py --help`) and the WSGI callable `app` that uWSGI serves
(module = app:app). Every command lives in commands.py, server.py or production.py; the
options in settings.py.
"""
import logging
import os
import sys

import commands
import compare
import evaluate
import production
import server
from errors import USER_ERRORS
from parsing import slip_for
from settings import COMMANDS, build_parser, refuse_unknown_environment_settings, settings_from_env
from sources.opencv_source import quiet_opencv
from web import create_app


def serve(args):
    return production.serve_production(args) if args.production else server.serve_development(args)


HANDLERS = {"serve": serve, "detect": commands.cmd_detect, "fetch-model": commands.cmd_fetch_model,
            "build-engine": commands.cmd_build_engine, "check": commands.cmd_check, "compare": compare.cmd_compare,
            "evaluate": evaluate.cmd_evaluate}


def configure_logging(level):
    """Our log on stderr at `level`; OpenCV's own only at DEBUG (quiet_opencv)."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_opencv(level)


def refuse_a_word_that_is_no_command(argv):
    """`python app.py detetc x.jpg` would run the server's parser, which names only its own
    options: say that the first word is no command, and which one it was likely meant for."""
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        meant = slip_for(argv[0], COMMANDS)
        print("python app.py: error: '{}' is no command{}; the commands are {} (python app.py --help)".format(
            argv[0], " (did you mean {}?)".format(meant) if meant else "", ", ".join(COMMANDS)), file=sys.stderr)
        sys.exit(2)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    refuse_a_word_that_is_no_command(argv)
    if not any(arg in COMMANDS for arg in argv) and not {"-h", "--help"} & set(argv):
        argv.insert(0, "serve")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # named by the command's own parser: `python app.py check: error: ...`, its usage
        args.command_parser.error("unrecognized arguments: " + " ".join(unknown))
    refuse_unknown_environment_settings()
    configure_logging(args.log_level)
    try:
        return HANDLERS[args.command](args)
    except USER_ERRORS as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # whoever read our output has gone (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the flush at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
else:
    # The WSGI callable for uWSGI (module = app:app), configured by $STREAMDETECT_*.
    # Building it starts nothing: the pipeline starts at the first request.
    environment_settings = settings_from_env()  # a bad $STREAMDETECT_* value: argparse's one-line error
    if "uwsgi" in sys.modules:
        configure_logging(environment_settings.log_level)
    app = create_app(environment_settings)
