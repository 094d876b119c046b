"""What a field camera runs: a model file from `wildfire-kd export`, with numpy, onnxruntime and OpenCV only.

No torch, no ultralytics: nothing here imports them, nor anything of wildfire_kd outside this folder but the pure
helpers errors.py, guard.py and layout.py (tests/test_edge_imports.py reads the imports). A camera team can take this
folder, those three files and requirements.txt, and nothing else. Start at model.py.

    metadata.py   the `wildfire_kd.*` metadata of a model file: the one reader and writer
    letterbox.py  the input contract: a frame to the network's input tensor
    boxes.py      IoU, NMS and the decoding of the output into detections
    model.py      CameraModel: a file, checked, run on a frame -> detections
    alarms.py     Confirmer: a camera's frames in time order -> alarms
    figures.py    the camera figures: false alarms on smoke-free frames, recall by object size
    detect.py     `detect`: a model over image files -> detections.jsonl, alerts.jsonl
    cli.py        `wildfire-kd-edge` (python -m wildfire_kd.edge)
"""
