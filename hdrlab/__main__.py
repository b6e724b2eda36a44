from hdrlab.cli import main

raise SystemExit(main())
