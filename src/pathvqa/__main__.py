from pathvqa.cli import main

main()
