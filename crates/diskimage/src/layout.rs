//! Where each balenaOS partition lives on the disk (pure).
//!
//! balenaOS aligns everything to `BALENA_IMAGE_ALIGNMENT` = 4 MiB: 4 MiB of
//! device-specific space before partition 1, every partition start and size a
//! multiple of 4 MiB, and, for GPT, room after the last partition for the
//! backup table. The GPT numbers are boot=1, rootA=2, rootB=3, state=4, data=5.

use uuid::Uuid;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Alignment of every partition start and size, and the gap before partition 1.
pub const ALIGNMENT: u64 = 4 * MIB;

/// Label of the boot partition (FAT, the EFI system partition on UEFI machines).
pub const BOOT_LABEL: &str = "resin-boot";
/// Label of root filesystem slot A.
pub const ROOT_A_LABEL: &str = "resin-rootA";
/// Label of root filesystem slot B.
pub const ROOT_B_LABEL: &str = "resin-rootB";
/// Label of the state partition.
pub const STATE_LABEL: &str = "resin-state";
/// Label of the data partition, the last one, grown on first boot.
pub const DATA_LABEL: &str = "resin-data";

/// GPT type of the EFI system partition.
pub const ESP_TYPE: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// GPT type "Linux filesystem data".
pub const LINUX_FS_TYPE: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

/// Requested partition sizes in MiB; root A and root B are the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSizes {
    /// `resin-boot`.
    pub boot_mib: u64,
    /// Each of `resin-rootA` and `resin-rootB`.
    pub root_mib: u64,
    /// `resin-state`.
    pub state_mib: u64,
    /// `resin-data` in the image (the boot stage grows it to fill the disk).
    pub data_mib: u64,
}

impl Default for PartitionSizes {
    /// balenaOS defaults: boot 100 MiB, roots 640 MiB, state 80 MiB, data 192 MiB.
    fn default() -> Self {
        PartitionSizes {
            boot_mib: 100,
            root_mib: 640,
            state_mib: 80,
            data_mib: 192,
        }
    }
}

/// One partition of a planned layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition number, 1-based.
    pub number: u32,
    /// GPT partition name, which is also the filesystem label.
    pub name: &'static str,
    pub type_guid: Uuid,
    pub offset_bytes: u64,
    pub size_bytes: u64,
}

impl PartitionSpec {
    /// First byte after the partition.
    pub fn end_bytes(&self) -> u64 {
        self.offset_bytes + self.size_bytes
    }
}

/// A planned disk: five partitions and the total image size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Partitions in GPT order (numbers 1..=5), ascending offsets.
    pub partitions: Vec<PartitionSpec>,
    /// Image size: end of the last partition plus one alignment unit, which
    /// holds the backup GPT.
    pub total_bytes: u64,
}

impl Layout {
    /// Place the five balenaOS partitions.
    ///
    /// Each size is rounded up to a multiple of 4 MiB (at least 4 MiB), so a
    /// layout always exists.
    pub fn compute(sizes: &PartitionSizes) -> Layout {
        let plan = [
            (BOOT_LABEL, ESP_TYPE, sizes.boot_mib),
            (ROOT_A_LABEL, LINUX_FS_TYPE, sizes.root_mib),
            (ROOT_B_LABEL, LINUX_FS_TYPE, sizes.root_mib),
            (STATE_LABEL, LINUX_FS_TYPE, sizes.state_mib),
            (DATA_LABEL, LINUX_FS_TYPE, sizes.data_mib),
        ];
        let mut offset = ALIGNMENT;
        let mut partitions = Vec::with_capacity(plan.len());
        for (number, (name, type_guid, mib)) in (1u32..).zip(plan) {
            let size_bytes = align_up(mib.saturating_mul(MIB)).max(ALIGNMENT);
            partitions.push(PartitionSpec {
                number,
                name,
                type_guid,
                offset_bytes: offset,
                size_bytes,
            });
            offset += size_bytes;
        }
        Layout {
            partitions,
            total_bytes: offset + ALIGNMENT,
        }
    }

    /// The partition with this name (label), if planned.
    pub fn partition(&self, name: &str) -> Option<&PartitionSpec> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Round up to the next multiple of [`ALIGNMENT`].
pub fn align_up(bytes: u64) -> u64 {
    bytes.div_ceil(ALIGNMENT) * ALIGNMENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balena_defaults_give_the_balena_layout() {
        let layout = Layout::compute(&PartitionSizes::default());
        let got: Vec<_> = layout
            .partitions
            .iter()
            .map(|p| (p.number, p.name, p.offset_bytes / MIB, p.size_bytes / MIB))
            .collect();
        assert_eq!(
            got,
            [
                (1, "resin-boot", 4, 100),
                (2, "resin-rootA", 104, 640),
                (3, "resin-rootB", 744, 640),
                (4, "resin-state", 1384, 80),
                (5, "resin-data", 1464, 192),
            ]
        );
        assert_eq!(layout.total_bytes, (1464 + 192 + 4) * MIB);
        assert_eq!(layout.partitions[0].type_guid, ESP_TYPE);
        assert!(
            layout.partitions[1..]
                .iter()
                .all(|p| p.type_guid == LINUX_FS_TYPE)
        );
        assert_eq!(ESP_TYPE.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            LINUX_FS_TYPE.to_string(),
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
    }

    #[test]
    fn odd_sizes_are_rounded_up_and_everything_stays_aligned() {
        let layout = Layout::compute(&PartitionSizes {
            boot_mib: 41,
            root_mib: 1,
            state_mib: 0,
            data_mib: 7,
        });
        let sizes: Vec<_> = layout
            .partitions
            .iter()
            .map(|p| p.size_bytes / MIB)
            .collect();
        assert_eq!(sizes, [44, 4, 4, 4, 8]);
        let mut expected_offset = ALIGNMENT;
        for p in &layout.partitions {
            assert_eq!(p.offset_bytes, expected_offset, "{} is contiguous", p.name);
            assert_eq!(p.offset_bytes % ALIGNMENT, 0);
            assert_eq!(p.size_bytes % ALIGNMENT, 0);
            expected_offset = p.end_bytes();
        }
        assert_eq!(layout.total_bytes, expected_offset + ALIGNMENT);
        assert_eq!(layout.total_bytes % ALIGNMENT, 0);
        assert_eq!(layout.partition(DATA_LABEL).map(|p| p.number), Some(5));
        assert!(layout.partition("flash-boot").is_none());
    }
}
