"""The main job: python execute.py [-p NAME VALUE]... (see vae_mnist/execute.py)."""

from vae_mnist.execute import main

if __name__ == "__main__":
    main()
