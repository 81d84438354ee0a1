//! balenaOS-layout disk images, written and read without loop devices or mounts.
//!
//! * [`layout`]: where the five partitions go (pure).
//! * [`gpt`]: write the partition table, read it back from an image or a
//!   block device, grow `resin-data` on first boot.
//! * [`fat`]: format and fill the `resin-boot` FAT filesystem in place; its
//!   volume serial.
//! * [`config`]: `config.json` injection and other reads of an image's
//!   boot partition.
//! * [`ext4`]: the ext4 superblock fields the boot stage needs.
//! * [`sparse`]: copy filesystem images into a disk image, keeping holes.
//!
//! Everything works on a [`Disk`] (an image file or a block device with the
//! path its errors name) or on a [`Slice`] of one.

pub mod config;
mod crc32;
mod disk;
mod error;
pub mod ext4;
pub mod fat;
pub mod gpt;
pub mod layout;
mod slice;
pub mod sparse;

pub use config::{inject_config, list_files, open_fat_partition, read_config, read_file};
pub use disk::Disk;
pub use error::{Error, Result};
pub use ext4::{Ext4Info, read_ext4_info, read_ext4_superblock};
pub use fat::{FatFormat, FatFs, fat_volume_id, format_boot_fs, format_fat, set_fat_volume_id};
pub use gpt::{
    GrowOutcome, PartitionInfo, find_partition, grow_disk, grow_last_partition,
    read_partition_table, read_partition_table_from, write_partition_table,
};
pub use layout::{Layout, PartitionSizes, PartitionSpec};
pub use slice::Slice;
pub use sparse::{copy_sparse, is_zero, write_partition_image};
