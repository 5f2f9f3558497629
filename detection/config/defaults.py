"""Every configuration key, its default and a one-line comment, in one place.

**To add a key, add one ``_add`` line in its section** - nothing else (``docs/config.md`` is generated from these
lines by ``tools/gen_config_docs.py``; a test checks they are in sync). Key names follow py-faster-rcnn where it
has one (``TRAIN.SCALES``, ``TRAIN.RPN_BATCHSIZE``, ``TEST.NMS``...).

Imports only detection/config/spec.py.
"""
from detection.config.spec import define_key as _add

__all__ = ["VOC_CLASSES"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# ---------------------------------------------------------------------------------------------------------------
# General
# ---------------------------------------------------------------------------------------------------------------
_add("RNG_SEED", 3, "Seed for python, numpy and torch RNGs (py-faster-rcnn's default 3); -1 = do not seed")
_add("DEVICE", "auto", "Device to run on: 'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'",
     pattern=r"auto|cpu|cuda(:\d+)?")
_add("OUTPUT_DIR", "outputs/default", "Directory for checkpoints, logs, detections and the dumped config")
_add("PIXEL_MEANS", (0.485, 0.456, 0.406),
     "Per-channel mean subtracted from RGB images in 0..1 (ImageNet statistics: the weights are torchvision's)",
     length=3)
_add("PIXEL_STDS", (0.229, 0.224, 0.225),
     "Per-channel std dividing RGB images in 0..1 after mean subtraction (ImageNet statistics, torchvision)",
     above=0.0, length=3)
_add("ANCHOR_SCALES", (8.0, 16.0, 32.0), "Anchor sizes in units of FEAT_STRIDE (8,16,32 x 16 = 128,256,512 px; "
     "fractions too: 0.5 x 16 = 8 px)",
     above=0, nonempty=True)
_add("ANCHOR_RATIOS", (0.5, 1.0, 2.0), "Anchor aspect ratios h/w", above=0.0, nonempty=True)
_add("ANCHOR_PLACEMENT", "py-faster-rcnn", "Anchor geometry: 'py-faster-rcnn' (centred on the cell centre, its "
     "rounded ratio enumeration) or 'torchvision' (centred on the cell's top-left corner, rounded sides, stride = "
     "padded size // feature size: what torchvision's detector weights were trained with)",
     choices=("py-faster-rcnn", "torchvision"))
_add("FEAT_STRIDE", 16, "Stride of the backbone trunk's feature map in input pixels (all registered trunks: 16)", min=1)
_add("POOLING_MODE", "align", "RoI feature extraction: 'align' (RoIAlign) or 'pool' (RoIPool, py-faster-rcnn)",
     choices=("align", "pool"))
_add("POOLING_SIZE", 0, "RoI pooled size P (PxP); 0 = the backbone's pooler_size (7 for VGG16, 14 for "
     "ResNet C4 and MobileNetV2)", min=0)
_add("POOLING_SAMPLING_RATIO", 0, "RoIAlign sampling points per bin side; <=0 = adaptive ceil(roi_size / P)")
_add("POOLING_ALIGNED", True, "RoIAlign with the half-pixel offset (detectron2 ROIAlignV2); False = legacy")
_add("INPUT.RESIZE_RULE", "py-faster-rcnn", "How the detector sizes an image from (TRAIN|TEST).SCALES and MAX_SIZE, "
     "in the model, in training and test alike: 'py-faster-rcnn' (scale = S/short side unless round(long side x "
     "scale) > MAX_SIZE, then MAX_SIZE/long side; sides rounded) or 'torchvision' (GeneralizedRCNNTransform: "
     "scale = min(S/short, MAX_SIZE/long); sides floored)", choices=("py-faster-rcnn", "torchvision"))
_add("INPUT.SIZE_DIVISIBILITY", 0, "Pad the batch's height and width up to a multiple of this; 0 = FEAT_STRIDE "
     "(with MODEL.NECK fpn: the coarsest of MODEL.FPN.IN_STRIDES; torchvision's detectors: 32)", min=0)

# ---------------------------------------------------------------------------------------------------------------
# MODEL: architecture choices read by the build_* functions
# ---------------------------------------------------------------------------------------------------------------
_add("MODEL.META_ARCHITECTURE", "faster_rcnn", "Model family built by build_model",
     choices=("faster_rcnn", "classifier"))
_add("MODEL.BACKBONE.NAME", "vgg16",
     "Backbone from the BACKBONES registry: vgg16, resnet18, resnet34, resnet50, resnet101, mobilenet_v2")
_add("MODEL.BACKBONE.WEIGHTS", "imagenet",
     "'imagenet' = torchvision's ImageNet file found by its own name in the torch hub cache or a weight-carrier "
     "package (never downloaded); a path = that torchvision state dict (or a folder holding it); '' = random init")
_add("MODEL.BACKBONE.FROZEN_BN", True, "Replace BatchNorm2d (ResNet, MobileNetV2) by FrozenBatchNorm2d: "
     "fixed statistics and affine")
_add("MODEL.FREEZE_AT", 2, "Freeze the first N trunk stages (detectron2): 0 none, 1 stem, 2 stem+res2 (VGG: "
     "conv1+conv2, py-faster-rcnn), ...; see docs/config.md", min=0)
_add("MODEL.NUM_CLASSES", 0, "Classes the model predicts; 0 = derived from DATA.CLASSES (+1 background for "
     "faster_rcnn)", min=0)
_add("MODEL.CLASS_AGNOSTIC_BBOX_REG", False, "One box regressor shared by all classes instead of one per class")
_add("MODEL.NECK", "none", "Between backbone and heads: 'none' (C4: the stride-FEAT_STRIDE trunk map, the "
     "backbone's last stage as box head) or 'fpn' (a feature pyramid over the backbone's stages: RPN on every level, "
     "RoIs pooled from the level their size maps to)", choices=("none", "fpn"))
_add("MODEL.FPN.IN_STRIDES", (4, 8, 16, 32), "Backbone stages feeding the FPN, by output stride (C2..C5; every "
     "registered backbone reports its stages)", min=1, nonempty=True)
_add("MODEL.FPN.OUT_CHANNELS", 256, "Channels of every pyramid level", min=1)
_add("MODEL.FPN.NORM", "", "Normalisation in the FPN's lateral and output convs: '' (none, convs with bias: "
     "torchvision v1) or 'bn' (BatchNorm2d: torchvision v2)", choices=("", "bn"))
_add("MODEL.FPN.TOP_BLOCK", "maxpool", "Extra coarsest level: 'maxpool' (P6 = stride-2 max-pool of P5, RPN only: "
     "torchvision's LastLevelMaxPool) or 'none'", choices=("maxpool", "none"))
_add("MODEL.FPN.ANCHOR_SIZES", (32, 64, 128, 256, 512), "Anchor side in px on each pyramid level, finest first (one "
     "per level, x ANCHOR_RATIOS; ANCHOR_SCALES is the C4 form)", above=0, nonempty=True)
_add("MODEL.RPN.HIDDEN_CHANNELS", 0, "Channels of the RPN's 3x3 conv; 0 = the trunk's channels (VGG16: 512)", min=0)
_add("MODEL.RPN.CONV_DEPTH", 1, "3x3 conv + ReLU layers of the RPN head before its 1x1 outputs (torchvision v2: 2)",
     min=1)
_add("MODEL.RPN.MIN_SIZE_SCALED", True, "(TRAIN|TEST).RPN_MIN_SIZE is in original-image px, scaled by the resize "
     "factor (py-faster-rcnn); False = in the resized image's px (torchvision: 0.001)")
_add("MODEL.RPN.SMOOTH_L1_BETA", 1.0 / 9.0, "Smooth-L1 beta of the RPN box loss (py-faster-rcnn sigma=3 -> 1/9)",
     min=0.0)
_add("MODEL.ROI_HEADS.SMOOTH_L1_BETA", 1.0, "Smooth-L1 beta of the Fast R-CNN box loss (sigma=1 -> 1)", min=0.0)
_add("MODEL.ROI_HEADS.NAME", "standard", "RoI heads: 'standard' (one Fast R-CNN head) or 'cascade' (Cascade R-CNN, "
     "Cai & Vasconcelos 2018: one box head + predictor per MODEL.CASCADE.IOUS stage, each refining the previous "
     "stage's boxes; class scores averaged over the stages at test time, the last stage's boxes; needs "
     "MODEL.CLASS_AGNOSTIC_BBOX_REG true)", choices=("standard", "cascade"))
_add("MODEL.CASCADE.IOUS", (0.5, 0.6, 0.7), "Cascade: a stage's foreground IoU (a RoI is background below it), one "
     "per stage; the first replaces TRAIN.FG_THRESH and TRAIN.BG_THRESH_HI", above=0.0, max=1.0, nonempty=True)
_add("MODEL.CASCADE.BBOX_REG_WEIGHTS", [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]],
     "Cascade: each stage's box-coder weights (wx, wy, ww, wh), torchvision's arithmetic (the paper's and "
     "detectron2's); one list of 4 per stage")
_add("MODEL.CASCADE.LOSS_WEIGHTS", (1.0, 0.5, 0.25), "Cascade: each stage's weight in the summed loss (the paper's "
     "and mmdetection's 1, 0.5, 0.25)", min=0.0, nonempty=True)
_add("MODEL.ROI_HEADS.BOX_HEAD", "backbone", "Per-RoI head: 'backbone' (its last stage: VGG fc6/fc7, ResNet res5, "
     "MobileNetV2 features[14:]; C4), 'mlp' (two new fully connected layers of MLP_DIM on the pooled features; "
     "much cheaper per RoI; torchvision's TwoMLPHead) or 'convfc' (CONV_DIMS 3x3 convs + one MLP_DIM fully "
     "connected layer: torchvision v2's FastRCNNConvFCHead)", choices=("backbone", "mlp", "convfc"))
_add("MODEL.ROI_HEADS.MLP_DIM", 1024, "Width of the 'mlp' box head's two layers (and of the 'convfc' head's one)",
     min=1)
_add("MODEL.ROI_HEADS.CONV_DIMS", (256, 256, 256, 256), "Channels of the 'convfc' box head's 3x3 convs", min=1)
_add("MODEL.ROI_HEADS.CONV_NORM", "bn", "Normalisation after each 'convfc' conv: 'bn' (BatchNorm2d, torchvision v2) "
     "or '' (none, convs with bias)", choices=("", "bn"))
_add("MODEL.ROI_HEADS.BBOX_REG_WEIGHTS", (), "Box-regression weights (wx, wy, ww, wh) in torchvision's arithmetic "
     "(targets x weights, deltas / weights; torchvision and detectron2: 10, 10, 5, 5); [] = normalise with "
     "TRAIN.BBOX_NORMALIZE_MEANS/STDS (py-faster-rcnn)")
_add("MODEL.CLS_HEAD.HIDDEN", [256], "Classifier: widths of the dense layers between the pooled features and "
     "the logits; [] = a single linear layer", min=1)
_add("MODEL.CLS_HEAD.DROPOUT", 0.5, "Classifier: dropout probability before each dense layer; 0 = off",
     min=0.0, max=1.0)
_add("MODEL.CLS_HEAD.TRAINABLE_STAGES", -1, "Classifier: train only the top N backbone stages (the dense head "
     "always trains); 0 = whole backbone frozen (feature extraction); -1 = use MODEL.FREEZE_AT instead", min=-1)
_add("MODEL.CLS_HEAD.PRETRAINED_LAYER", False, "Classifier: predict with the backbone's own ImageNet final layer "
     "(1000 torchvision classes, no training) instead of a new dense head")

# ---------------------------------------------------------------------------------------------------------------
# TRAIN: py-faster-rcnn's training keys (sampling, RPN, proposals)
# ---------------------------------------------------------------------------------------------------------------
_add("TRAIN.SCALES", (600,), "Shortest-side sizes in pixels; one is picked at random per image", min=1, nonempty=True)
_add("TRAIN.MAX_SIZE", 1000, "Longest side is capped at this many pixels after scaling", min=0)
_add("TRAIN.IMS_PER_BATCH", 2, "Images per training batch (per process)", min=1)
_add("TRAIN.BATCH_SIZE", 128, "RoIs sampled per image for the Fast R-CNN head (py-faster-rcnn 128, detectron2 512)",
     min=1)
_add("TRAIN.FG_FRACTION", 0.25, "Fraction of the sampled RoIs that are foreground at most", min=0.0, max=1.0)
_add("TRAIN.FG_THRESH", 0.5, "A RoI with IoU >= FG_THRESH to a ground-truth box is foreground", min=0.0, max=1.0)
_add("TRAIN.BG_THRESH_HI", 0.5, "A RoI with IoU in [BG_THRESH_LO, BG_THRESH_HI) is background", min=0.0, max=1.0)
_add("TRAIN.BG_THRESH_LO", 0.0, "Lower IoU bound for background RoIs (py-faster-rcnn end2end: 0.0)", min=0.0, max=1.0)
_add("TRAIN.BBOX_NORMALIZE_MEANS", (0.0, 0.0, 0.0, 0.0), "Means subtracted from the (dx,dy,dw,dh) box targets",
     length=4)
_add("TRAIN.BBOX_NORMALIZE_STDS", (0.1, 0.1, 0.2, 0.2), "Stds dividing the (dx,dy,dw,dh) box targets",
     above=0.0, length=4)
_add("TRAIN.RPN_POSITIVE_OVERLAP", 0.7, "An anchor with IoU >= this to a ground-truth box is positive",
     min=0.0, max=1.0)
_add("TRAIN.RPN_NEGATIVE_OVERLAP", 0.3, "An anchor whose best IoU < this is negative", min=0.0, max=1.0)
_add("TRAIN.RPN_CLOBBER_POSITIVES", False, "Let the negative rule override the positive one (py-faster-rcnn)")
_add("TRAIN.RPN_FG_FRACTION", 0.5, "Fraction of the sampled anchors that are positive at most", min=0.0, max=1.0)
_add("TRAIN.RPN_BATCHSIZE", 256, "Anchors sampled per image for the RPN loss", min=1)
_add("TRAIN.RPN_ALLOWED_BORDER", 0, "Anchors crossing the image border by more than this many px are ignored in "
     "training; -1 = keep all", min=-1)
_add("TRAIN.RPN_PRE_NMS_TOP_N", 12000, "Proposals kept per image before NMS in training", min=1)
_add("TRAIN.RPN_POST_NMS_TOP_N", 2000, "Proposals kept per image after NMS in training", min=1)
_add("TRAIN.RPN_NMS_THRESH", 0.7, "IoU threshold of the proposal NMS in training", min=0.0, max=1.0)
_add("TRAIN.RPN_MIN_SIZE", 16.0, "Proposals with a side smaller than this (original-image px) are dropped; 0 = keep",
     min=0.0)
_add("TRAIN.USE_FLIPPED", True, "Horizontal-flip augmentation (py-faster-rcnn name), with probability AUG.HFLIP_PROB")
_add("TRAIN.USE_DIFFICULT", False, "Train on VOC boxes marked difficult as well")
_add("TRAIN.SNAPSHOT_ITERS", 10000, "Save a checkpoint every N iterations (and at the end); 0 = only at the end", min=0)
_add("TRAIN.LOG_PERIOD", 20, "Log losses, learning rate and speed every N iterations", min=1)

# ---------------------------------------------------------------------------------------------------------------
# TEST
# ---------------------------------------------------------------------------------------------------------------
_add("TEST.SCALES", (600,), "Shortest-side sizes at test time; several = multi-scale testing", min=1, nonempty=True)
_add("TEST.MAX_SIZE", 1000, "Longest side is capped at this many pixels at test time", min=0)
_add("TEST.IMS_PER_BATCH", 1, "Images per inference batch", min=1)
_add("TEST.NMS", 0.3, "IoU threshold of the per-class NMS on the final detections", min=0.0, max=1.0)
_add("TEST.NMS_METHOD", "hard", "Per-class NMS of the final detections (and of the test-time augmentation merge): "
     "'hard' (suppress boxes with IoU > TEST.NMS), or Soft-NMS (Bodla et al. 2017: decay their scores instead): "
     "'linear' (score x (1 - IoU) where IoU > TEST.NMS) or 'gaussian' (score x exp(-IoU^2 / TEST.SOFT_NMS_SIGMA)); "
     "ONNX export needs 'hard' (torch.export keeps Soft-NMS)", choices=("hard", "linear", "gaussian"))
_add("TEST.SOFT_NMS_SIGMA", 0.5, "Soft-NMS 'gaussian': the sigma of exp(-IoU^2 / sigma) (the authors' 0.5)",
     above=0.0)
_add("TEST.SOFT_NMS_MIN_SCORE", 0.001, "Soft-NMS: a box whose decayed score falls below this is dropped (the "
     "authors' 0.001)", min=0.0, max=1.0)
_add("TEST.RPN_PRE_NMS_TOP_N", 6000, "Proposals kept per image before NMS at test time", min=1)
_add("TEST.RPN_POST_NMS_TOP_N", 300, "Proposals kept per image after NMS at test time", min=1)
_add("TEST.RPN_NMS_THRESH", 0.7, "IoU threshold of the proposal NMS at test time", min=0.0, max=1.0)
_add("TEST.RPN_MIN_SIZE", 16.0, "Proposals with a side smaller than this (original-image px) are dropped; 0 = keep",
     min=0.0)
_add("TEST.SCORE_THRESH", 0.05, "Detections scoring below this are discarded before NMS", min=0.0, max=1.0)
_add("TEST.DETECTIONS_PER_IMAGE", 100, "Keep at most this many detections per image (over all classes)", min=1)
_add("TEST.DETECTION_MIN_SIZE", 0.001, "Detections with a side smaller than this (resized-image px) are dropped "
     "before NMS (torchvision: 0.01)", min=0.0)
_add("TEST.VOC_07_METRIC", "auto", "VOC AP metric: 'auto' (py-faster-rcnn's rule: the 11-point VOC2007 metric "
     "for VOC years before 2010, else the VOC2010+ area under the curve), 'true' (11-point) or 'false' (area); "
     "YAML true/false work too; reval.py uses the same rule", choices=("auto", "true", "false"))
_add("TEST.VOC_RULES", "py-faster-rcnn", "VOC matching and AP rules, each its reference exactly: 'py-faster-rcnn' "
     "(voc_eval.py, as detectron2: IoU > 0.5, 11-point thresholds np.arange(0, 1.1, 0.1)) or 'devkit' (MATLAB "
     "VOCevaldet.m: IoU >= 0.5, thresholds 0:0.1:1, stable score sort)", choices=("py-faster-rcnn", "devkit"))
_add("TEST.EVAL_PERIOD", 0, "Evaluate on DATA.TEST_SET every N training iterations; 0 = only after training", min=0)
_add("TEST.FLIP", False, "Test-time augmentation: also run the flipped image and merge the detections")

# ---------------------------------------------------------------------------------------------------------------
# SOLVER
# ---------------------------------------------------------------------------------------------------------------
_add("SOLVER.OPTIMIZER", "sgd", "Optimizer: 'sgd' (with momentum), 'adam' (torch.optim.Adam, WEIGHT_DECAY as L2) or "
     "'adamw' (decoupled weight decay)", choices=("sgd", "adam", "adamw"))
_add("SOLVER.BASE_LR", 0.001, "Learning rate after warm-up (py-faster-rcnn VGG16: 0.001)", min=0.0)
_add("SOLVER.MOMENTUM", 0.9, "SGD momentum (Adam: beta1)", min=0.0, max=1.0)
_add("SOLVER.WEIGHT_DECAY", 0.0005, "L2 weight decay of the weights", min=0.0)
_add("SOLVER.WEIGHT_DECAY_BIAS", 0.0, "L2 weight decay of biases (py-faster-rcnn: none)", min=0.0)
_add("SOLVER.BIAS_LR_FACTOR", 2.0, "Learning-rate multiplier of biases (py-faster-rcnn DOUBLE_BIAS: 2)", min=0.0)
_add("SOLVER.MAX_ITER", 70000, "Training iterations (batches)", min=1)
_add("SOLVER.LR_POLICY", "step", "Schedule after warm-up: 'step' (x GAMMA at each of STEPS), 'cosine' (to 0) or "
     "'constant'", choices=("step", "cosine", "constant"))
_add("SOLVER.STEPS", (50000,), "Iterations where 'step' multiplies the learning rate by GAMMA", min=0)
_add("SOLVER.GAMMA", 0.1, "Learning-rate factor at each step", min=0.0)
_add("SOLVER.WARMUP_ITERS", 0, "Linear warm-up iterations; 0 = no warm-up", min=0)
_add("SOLVER.WARMUP_FACTOR", 0.001, "Warm-up starts at BASE_LR * WARMUP_FACTOR", min=0.0, max=1.0)
_add("SOLVER.CLIP_GRAD_NORM", 0.0, "Clip the total gradient norm to this value; 0 = off", min=0.0)
_add("SOLVER.AMP", False, "Automatic mixed precision (CUDA only; ignored on CPU)")
_add("SOLVER.EMA.ENABLED", False, "Keep an exponential moving average of the weights (every floating-point entry "
     "of the state dict: parameters and BatchNorm statistics); it is the model evaluated (periodic and final) and "
     "saved as checkpoints' 'model', the raw weights as 'model_raw'")
_add("SOLVER.EMA.DECAY", 0.9998, "EMA decay d: ema = d * ema + (1 - d) * weights after every iteration (timm's "
     "0.9998; YOLOv5 0.9999, d2go 0.999)", min=0.0, max=1.0)
_add("SOLVER.EMA.TAU", 2000.0, "EMA warm-up: the decay of update n is DECAY * (1 - exp(-n / TAU)), so early "
     "weights fade fast (YOLOv5's ramp); 0 = DECAY from the first update", min=0.0)

# ---------------------------------------------------------------------------------------------------------------
# DATA
# ---------------------------------------------------------------------------------------------------------------
_add("DATA.FORMAT", "voc", "Dataset reader: 'voc' (VOCdevkit), 'coco' (json), 'yolo' (data.yaml + images/ + "
     "labels/, Ultralytics' layout) or 'image_folder' (class folders)", choices=("voc", "coco", "yolo", "image_folder"))
_add("DATA.ROOT", "datasets/VOCdevkit", "Dataset root: VOCdevkit folder, COCO image folder, YOLO dataset folder (or "
     "its data.yaml) or image-folder root")
_add("DATA.TRAIN_SETS", ["2007_trainval"], "Training sets, concatenated: VOC 'YEAR_SPLIT' names (e.g. "
     "['2007_trainval', '2012_trainval']), COCO 'ann.json[:image_dir]' (relative to ROOT), YOLO data.yaml splits "
     "(['train']) or image-folder subfolders")
_add("DATA.TEST_SET", "2007_test", "Evaluation set: a VOC 'YEAR_SPLIT', a COCO json path, a YOLO data.yaml split "
     "('val') or an image-folder subfolder")
_add("DATA.CLASSES", list(VOC_CLASSES), "Class names in label order (labels 1..K); [] = from the dataset "
     "(COCO categories, image-folder names)")
_add("DATA.CLASSES_FROM", "", "When DATA.CLASSES is []: take it from a named list instead of the dataset: "
     "'torchvision_coco' = the 90 labels of torchvision's COCO detectors from its weight metadata (label = COCO "
     "category id; its 'N/A' placeholders stay in the softmax but are never reported)",
     choices=("", "torchvision_coco"))
_add("DATA.SKIP_BAD_IMAGES", False, "Skip unreadable/corrupt images with a warning instead of raising")
_add("DATA.CHECK_IMAGES", True, "Cheap header check of every image when reading annotations (missing, empty, "
     "truncated JPEG); full decode errors surface when loading")
_add("DATA.FILTER_EMPTY", True, "Drop training images without trainable boxes (crowd, and difficult unless "
     "TRAIN.USE_DIFFICULT, do not count); test sets keep every image")
_add("DATA.YOLO_UNLABELED", "negative", "YOLO images without a label file (or with an empty one): 'negative' = "
     "kept as images without boxes (background images, Ultralytics' rule; training still drops them unless "
     "DATA.FILTER_EMPTY is false) or 'drop' = left out when reading", choices=("negative", "drop"))
_add("DATA.NUM_WORKERS", 2, "DataLoader worker processes; 0 = load in the main process", min=0)
_add("DATA.ASPECT_RATIO_GROUPING", True, "Batch landscape and portrait images separately (less padding)")

# ---------------------------------------------------------------------------------------------------------------
# CLS: the image classifier (MODEL.META_ARCHITECTURE: classifier)
# ---------------------------------------------------------------------------------------------------------------
_add("CLS.IMAGE_SIZE", 224, "Classifier: side of the square input the backbone sees, in pixels", min=1)
_add("CLS.RESIZE", "squash", "Classifier: how an image becomes IMAGE_SIZE x IMAGE_SIZE: 'squash' (resize, aspect not "
     "kept: Keras target_size) or 'center_crop' (shortest side to IMAGE_SIZE/0.875, centre crop: torchvision)",
     choices=("squash", "center_crop"))
_add("CLS.CACHE_FEATURES", True, "Classifier: with the whole backbone frozen and no random augmentation, compute "
     "its features once, cache them under OUTPUT_DIR/feature_cache and train the head from the cache")
_add("CLS.ANALYSIS_IMAGES", 8, "Classifier evaluation: images per class in each row of the confidence analysis "
     "(most confident correct, least confident, most confidently wrong); 0 = no analysis files", min=0)
_add("TEST.TEN_CROP", False, "Classifier: ten-crop test-time augmentation (4 corners + centre, and their mirror "
     "images, of the image resized to IMAGE_SIZE/0.875; probabilities averaged)")

# ---------------------------------------------------------------------------------------------------------------
# AUG: training-time augmentation (albumentations), applied before the model's own resize
# ---------------------------------------------------------------------------------------------------------------
_add("AUG.HFLIP_PROB", 0.5, "Probability of a horizontal flip when TRAIN.USE_FLIPPED is on", min=0.0, max=1.0)
_add("AUG.COLOR_JITTER", False, "Random brightness, contrast, saturation and hue")
_add("AUG.COLOR_JITTER_STRENGTH", 0.2, "Brightness/contrast/saturation jitter amplitude (hue: a quarter of it)",
     min=0.0, max=1.0)
_add("AUG.RANDOM_CROP", False, "Random crop before the resize (mode AUG.RANDOM_CROP_MODE)")
_add("AUG.RANDOM_CROP_MODE", "safe", "'safe': a crop that keeps every box whole; 'area': a crop of "
     "RANDOM_CROP_SCALE of the area, keeping boxes per MIN_BOX_VISIBILITY", choices=("safe", "area"))
_add("AUG.RANDOM_CROP_PROB", 0.5, "Probability of cropping an image when AUG.RANDOM_CROP is on", min=0.0, max=1.0)
_add("AUG.RANDOM_CROP_SCALE", (0.3, 1.0), "Range of the crop's area as a fraction of the image (mode 'area')",
     above=0.0, max=1.0, length=2)
_add("AUG.MIN_BOX_VISIBILITY", 0.5, "A cropped box is kept if at least this fraction of its area remains",
     min=0.0, max=1.0)
