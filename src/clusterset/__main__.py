from clusterset.cli.main import main

main()
