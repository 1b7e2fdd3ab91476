from verbund.cli import main

main()
