from neurocli.entry import main

main()
