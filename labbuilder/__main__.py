from labbuilder.cli.main import main

main()
