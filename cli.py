"""Run the radis-mlx CLI from a checkout: `python cli.py generate ...`."""
from radis_mlx.cli import main

if __name__ == "__main__":
    main()
