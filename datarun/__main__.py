from datarun.cli import main

main()
