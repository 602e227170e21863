from datarun.launch import main

main(prog_name="datarun")  # `python -m datarun` names itself as the installed command does
