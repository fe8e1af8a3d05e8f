from faceshield.cli import main

raise SystemExit(main())
