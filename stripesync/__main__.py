from stripesync.cli import main

raise SystemExit(main())
