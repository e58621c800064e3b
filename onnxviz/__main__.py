from onnxviz.cli import main

main()
