from keysat.cli import main

main()
