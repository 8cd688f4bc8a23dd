from thunderhelm.streams.cli.main import main

raise SystemExit(main())
