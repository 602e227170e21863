from datarun.launch import main

main()
