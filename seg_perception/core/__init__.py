"""ROS-free, torch-free core: image conversion, pre/post-processing, masks, drawing."""
