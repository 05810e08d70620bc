"""`python -m pagedllm`: the `pagedllm` command."""
from pagedllm.cli.main import main

if __name__ == "__main__":
    main()
