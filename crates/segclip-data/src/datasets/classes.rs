//! The official class-name lists of the evaluation datasets (spec section 4.2), background
//! first.

/// PASCAL VOC 2012: 21 classes.
pub const VOC: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "plant",
    "sheep",
    "sofa",
    "train",
    "monitor",
];

/// PASCAL Context: 60 classes (59 + background).
pub const CONTEXT: [&str; 60] = [
    "background",
    "airplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "plant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "monitor",
    "wall",
    "water",
    "window",
    "wood",
];

/// COCO-Object: background + the 80 COCO thing classes.
pub const COCO_OBJECT: [&str; 81] = [
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// COCO category ids (1-based, with gaps) of the 80 thing classes, in [`COCO_OBJECT`] order.
pub const COCO_THING_IDS: [u8; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

/// COCO-Stuff-164k label (COCO id − 1; 255 unlabeled) → COCO-Object train id: things 1..80,
/// stuff and unlabeled → 0 (background, not ignored), as the official conversion script does.
pub fn coco_object_id(stuff_label: u8) -> u8 {
    COCO_THING_IDS
        .iter()
        .position(|&id| id as u16 == stuff_label as u16 + 1)
        .map_or(0, |i| i as u8 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_mapping() {
        assert_eq!(coco_object_id(0), 1); // person
        assert_eq!(coco_object_id(11), 0); // COCO id 12 does not exist
        assert_eq!(coco_object_id(12), 12); // stop sign (id 13)
        assert_eq!(coco_object_id(89), 80); // toothbrush (id 90)
        assert_eq!(coco_object_id(91), 0); // a stuff class
        assert_eq!(coco_object_id(255), 0); // unlabeled -> background
        let mut ids = COCO_THING_IDS.to_vec();
        ids.dedup();
        assert_eq!(ids.len(), 80);
    }
}
