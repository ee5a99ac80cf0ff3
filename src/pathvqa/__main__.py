from pathvqa.apps.cli import main

main()
