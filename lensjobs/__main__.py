from lensjobs.cli import main

main()
