from fastseg.cli import main

main()
