from labbuilder.cli import main

main()
