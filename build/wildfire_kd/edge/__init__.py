"""What a field camera runs: a model from `wildfire-kd export`, with numpy, OpenCV and one inference runtime only.

No torch, no ultralytics: nothing here imports them, nor anything of wildfire_kd outside this folder but the pure
helpers errors.py, guard.py and layout.py (tests/test_edge_imports.py reads the imports). A camera team can take this
folder, those three files, requirements.txt and its runtime's requirements-<runtime>.txt, and nothing else. Start at
model.py.

    metadata.py   the `wildfire_kd.*` metadata of a model file: the one reader and writer
    letterbox.py  the input contract: a frame to the network's input tensor
    boxes.py      IoU, NMS and the decoding of the output into detections
    runtimes.py   onnxruntime, OpenVINO and NCNN behind one interface, picked from what the model is
    model.py      CameraModel: a file, checked, run on a frame -> detections
    alarms.py     AlarmRule and Confirmer: a camera's frames in time order -> alarms
    static.py     a camera's memory of detections that stay put, suppressed before the alarm rule
    events.py     one event per fire: alarms grouped into opened / updated / closed events
    camera.py     CameraPath: detections -> static memory -> alarm rule -> events (detect and the figures share it)
    options.py    detect's options, once, for both command lines
    masks.py      the regions a camera ignores (its folder's mask.png / mask.json)
    figures.py    the camera figures: false alarms on smoke-free frames, recall by object size
    sequences.py  camera sequences on disk (frames.csv or HPWREN names): frames, times, smoke onset
    sequence_figures.py  minutes to detection, false alarms per camera-day; choose_rule
    detect.py     `detect`: a model over image files -> detections.jsonl, alerts.jsonl
    cli.py        `wildfire-kd-edge` (python -m wildfire_kd.edge)
"""
