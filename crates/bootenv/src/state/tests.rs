//! Every path of the boot picker, plus the round trip through [`EnvBlock`].

use super::*;
use crate::{BLOCK_SIZE, HEADER};

fn env(slot: Slot, upgrade_available: bool, bootcount: u32) -> BootEnv {
    BootEnv {
        resin_root_part: slot,
        upgrade_available,
        bootcount,
    }
}

fn block_with(body: &str) -> EnvBlock {
    let mut bytes = format!("{HEADER}{body}").into_bytes();
    bytes.resize(BLOCK_SIZE, b'#');
    EnvBlock::parse(&bytes).unwrap()
}

#[test]
fn slot_other_and_text() {
    assert_eq!(Slot::A.other(), Slot::B);
    assert_eq!(Slot::B.other(), Slot::A);
    assert_eq!(Slot::A.to_string(), "A");
    assert_eq!("B".parse::<Slot>().unwrap(), Slot::B);
    assert_eq!(
        "a".parse::<Slot>().unwrap_err().to_string(),
        "invalid bootenv value resin_root_part=\"a\": expected A or B"
    );
}

#[test]
fn normal_boot_of_a() {
    let d = decide(&env(Slot::A, false, 0));
    assert_eq!(
        d,
        Decision {
            slot: Slot::A,
            reason: Reason::Normal,
            persist: None
        }
    );
}

#[test]
fn normal_boot_of_b_ignores_stale_bootcount() {
    let d = decide(&env(Slot::B, false, 7));
    assert_eq!(
        d,
        Decision {
            slot: Slot::B,
            reason: Reason::Normal,
            persist: None
        }
    );
}

#[test]
fn update_attempts_one_to_three_boot_the_new_slot_and_count_first() {
    for (stored, attempt) in [(0, 1), (1, 2), (2, 3)] {
        let d = decide(&env(Slot::B, true, stored));
        assert_eq!(
            d,
            Decision {
                slot: Slot::B,
                reason: Reason::TryingUpdate { attempt, of: 3 },
                persist: Some(env(Slot::B, true, attempt)),
            },
            "stored bootcount {stored}"
        );
    }
}

#[test]
fn fourth_boot_falls_back_without_touching_root_part() {
    let d = decide(&env(Slot::B, true, 3));
    assert_eq!(
        d,
        Decision {
            slot: Slot::A,
            reason: Reason::Fallback { failed_attempts: 3 },
            persist: Some(env(Slot::B, true, 4)),
        }
    );
}

#[test]
fn bootcount_saturates_at_max_plus_one() {
    // Already at the cap: keep falling back, no write on every boot.
    let d = decide(&env(Slot::A, true, MAX_ATTEMPTS + 1));
    assert_eq!(d.slot, Slot::B);
    assert_eq!(d.reason, Reason::Fallback { failed_attempts: 3 });
    assert_eq!(d.persist, None);
    // Above the cap (written by another bootloader): pulled back to the cap.
    let d = decide(&env(Slot::A, true, 57));
    assert_eq!(d.slot, Slot::B);
    assert_eq!(d.persist, Some(env(Slot::A, true, 4)));
    let d = decide(&env(Slot::A, true, u32::MAX));
    assert_eq!(d.slot, Slot::B);
    assert_eq!(d.persist, Some(env(Slot::A, true, 4)));
}

#[test]
fn the_whole_trial_of_a_bad_update() {
    let mut stored = env(Slot::B, true, 0);
    let mut booted = Vec::new();
    for _ in 0..6 {
        let d = decide(&stored);
        if let Some(new) = d.persist {
            stored = new;
        }
        booted.push(d.slot);
    }
    use Slot::{A, B};
    assert_eq!(booted, [B, B, B, A, A, A]);
    assert_eq!(stored, env(B, true, 4));
}

#[test]
fn unbootable_update_slot_falls_back_and_exhausts_attempts() {
    // decide() booted attempt 2 of B and persisted bootcount=2; B has no kernel.
    let stored = env(Slot::B, true, 2);
    let d = slot_unbootable(&stored, Slot::B).unwrap();
    assert_eq!(
        d,
        Decision {
            slot: Slot::A,
            reason: Reason::Fallback { failed_attempts: 2 },
            persist: Some(env(Slot::B, true, 4)),
        }
    );
    // The next boot goes straight to the fallback.
    let next = decide(&d.persist.unwrap());
    assert_eq!(next.slot, Slot::A);
    assert_eq!(next.persist, None);
}

#[test]
fn unbootable_update_slot_already_exhausted_writes_nothing() {
    let d = slot_unbootable(&env(Slot::A, true, 4), Slot::A).unwrap();
    assert_eq!(d.slot, Slot::B);
    assert_eq!(d.reason, Reason::Fallback { failed_attempts: 3 });
    assert_eq!(d.persist, None);
}

#[test]
fn unbootable_update_slot_counts_at_least_the_failed_attempt() {
    // A caller that forgot to persist decide()'s count still gets a sane fallback.
    let d = slot_unbootable(&env(Slot::A, true, 0), Slot::A).unwrap();
    assert_eq!(d.slot, Slot::B);
    assert_eq!(d.reason, Reason::Fallback { failed_attempts: 1 });
    assert_eq!(d.persist, Some(env(Slot::A, true, 4)));
}

#[test]
fn unbootable_fallback_slot_leaves_nothing_to_boot() {
    let err = slot_unbootable(&env(Slot::B, true, 4), Slot::A).unwrap_err();
    assert_eq!(err, NoBootableSlot::FallbackUnbootable { slot: Slot::A });
    assert_eq!(
        err.to_string(),
        "slot A cannot be booted and it is already the fallback from the failed update in slot B"
    );
}

#[test]
fn unbootable_slot_without_pending_update_leaves_nothing_to_boot() {
    let err = slot_unbootable(&env(Slot::A, false, 0), Slot::A).unwrap_err();
    assert_eq!(err, NoBootableSlot::NoUpdatePending { slot: Slot::A });
    assert_eq!(
        err.to_string(),
        "slot A cannot be booted and no update is pending, so there is no known-good slot to fall back to"
    );
    assert_eq!(
        slot_unbootable(&env(Slot::A, false, 0), Slot::B),
        Err(NoBootableSlot::NoUpdatePending { slot: Slot::B })
    );
}

#[test]
fn missing_keys_take_defaults() {
    let parsed = BootEnv::from_block(&EnvBlock::new()).unwrap();
    assert_eq!(parsed, env(Slot::A, false, 0));
}

#[test]
fn reads_all_keys() {
    let block = block_with("resin_root_part=B\nupgrade_available=1\nbootcount=2\n");
    assert_eq!(BootEnv::from_block(&block).unwrap(), env(Slot::B, true, 2));
}

#[test]
fn invalid_values_name_key_and_value() {
    let cases = [
        (
            "resin_root_part=3\n",
            "invalid bootenv value resin_root_part=\"3\": expected A or B",
        ),
        (
            "upgrade_available=yes\n",
            "invalid bootenv value upgrade_available=\"yes\": expected 0 or 1",
        ),
        (
            "bootcount=\n",
            "invalid bootenv value bootcount=\"\": expected a decimal number of boot attempts",
        ),
        (
            "bootcount=+1\n",
            "invalid bootenv value bootcount=\"+1\": expected a decimal number of boot attempts",
        ),
        (
            "bootcount=0 \n",
            "invalid bootenv value bootcount=\"0 \": expected a decimal number of boot attempts",
        ),
        (
            "bootcount=99999999999\n",
            "invalid bootenv value bootcount=\"99999999999\": expected a decimal number of boot attempts",
        ),
    ];
    for (body, message) in cases {
        let err = BootEnv::from_block(&block_with(body)).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn written_block_is_the_literal_expected_bytes() {
    let mut block = EnvBlock::new();
    env(Slot::A, false, 0).apply_to(&mut block);
    let bytes = block.to_bytes().unwrap();
    let text = "# GRUB Environment Block\n\
                bootcount=0\n\
                resin_root_part=A\n\
                upgrade_available=0\n";
    assert_eq!(text.len(), 75);
    let expected = format!("{text}{}", "#".repeat(949));
    assert_eq!(expected.len(), 1024);
    assert_eq!(bytes.as_slice(), expected.as_bytes());
}

#[test]
fn round_trip_keeps_unknown_keys_and_order() {
    let mut block = block_with(
        "kernel_override_abi=0123abcd\nresin_root_part=A\nupgrade_available=1\n\
         bootcount=1\nextra_os_firmware_class_path=/lib/fw\n",
    );
    let stored = BootEnv::from_block(&block).unwrap();
    let d = decide(&stored);
    let new = d.persist.unwrap();
    new.apply_to(&mut block);
    let expected = block_with(
        "kernel_override_abi=0123abcd\nresin_root_part=A\nupgrade_available=1\n\
         bootcount=2\nextra_os_firmware_class_path=/lib/fw\n",
    );
    assert_eq!(block, expected);
    let reread = EnvBlock::parse(&block.to_bytes().unwrap()).unwrap();
    assert_eq!(BootEnv::from_block(&reread).unwrap(), new);
    assert_eq!(reread.get("kernel_override_abi"), Some("0123abcd"));
}

#[test]
fn reasons_read_well_in_logs() {
    assert_eq!(Reason::Normal.to_string(), "no update pending");
    assert_eq!(
        Reason::TryingUpdate { attempt: 2, of: 3 }.to_string(),
        "trying the update, boot attempt 2 of 3"
    );
    assert_eq!(
        Reason::Fallback { failed_attempts: 3 }.to_string(),
        "falling back to the previous OS after 3 failed boot attempt(s) of the update"
    );
}
