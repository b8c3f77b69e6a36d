from gatewright.cli import main

main()
