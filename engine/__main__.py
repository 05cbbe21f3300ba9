import sys

from engine import startup

if sys.argv[1:2] == ["train"]:
    startup.pause()  # until the first epoch (engine.startup says why)

from control.cli import main  # noqa: E402

raise SystemExit(main())
