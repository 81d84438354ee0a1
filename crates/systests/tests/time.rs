//! VM tests of the time chain: build-time floor, saved clock, RTC, the HTTPS
//! `Date` step and chrony with its health check. Every server is the test's
//! own, inside a network namespace; the guest's clock is the only one moved
//! (the NTP server runs with `chronyd -x`, which never touches the host's).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use systests::timeservers::{Answer, DateSpec, HttpsTime, NtpServer};
use systests::{Scratch, json_holds};
use vmharness::Vm;

const SSH_WAIT: Duration = Duration::from_secs(600);
const DAY: u64 = 86_400;

fn out(vm: &Vm, command: &str) -> String {
    vm.run_ok(command).unwrap().trim().to_string()
}

fn host_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The guest's clock, seconds since the epoch.
fn guest_now(vm: &Vm) -> f64 {
    out(vm, "date +%s.%N").parse().unwrap()
}

/// How far the guest's clock is from the host's (positive: ahead), allowing
/// for the SSH round trip.
fn guest_offset(vm: &Vm) -> f64 {
    let before = host_now();
    let guest = guest_now(vm);
    let after = host_now();
    if guest < before {
        guest - before
    } else if guest > after {
        guest - after
    } else {
        0.0
    }
}

/// `/etc/timestamp` of the guest, in seconds since the epoch.
fn build_time(vm: &Vm) -> u64 {
    out(
        vm,
        "t=$(cat /etc/timestamp); date -u -d \"${t:0:8} ${t:8:2}:${t:10:2}:${t:12:2}\" +%s",
    )
    .parse()
    .unwrap()
}

/// What the guest's time chain did: its journal and `/run/baleen/time.json`, for failure
/// messages.
fn time_story(vm: &Vm) -> String {
    vm.run(
        "journalctl -b --no-pager -o short-monotonic -u 'baleen-time*' -u chrony -u 'baleen-ntp*' \
         | tail -60; cat /run/baleen/time.json; date -u +%FT%T.%NZ",
    )
    .map(|o| o.stdout)
    .unwrap_or_default()
}

/// Polls `check` (a shell condition on the guest) until it holds.
fn wait_until(vm: &Vm, check: &str, timeout: Duration) {
    if let Err(e) = vm.wait_until(check, timeout) {
        panic!("{e}\n{}", time_story(vm));
    }
}

fn reboot(vm: &mut Vm) {
    let before = vm.boot_id().unwrap();
    let _ = vm.run("systemctl reboot");
    vm.wait_for_new_boot(&before, SSH_WAIT).unwrap();
}

fn time_status(vm: &Vm) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&out(vm, "baleen status --json")).unwrap();
    status["time"].clone()
}

#[test]
fn build_time_floor_saved_clock_and_rtc() {
    let scratch = Scratch::new("time-early");
    let image = scratch.image_with_config(
        "dev",
        &serde_json::json!({
            "deviceType": "qemux86-64",
            "developmentMode": true,
            "os": {"network": {"connectivity": {"uri": "null"}}}
        }),
    );
    // An RTC years in the past and no saved clock: a board from a drawer.
    let mut vm = Vm::builder("time-early")
        .disk(&image, vmharness::DiskFormat::Raw)
        .persist(true)
        .rtc_base("2020-01-01T00:00:00")
        .start()
        .unwrap();
    vm.wait_for_ssh(SSH_WAIT).unwrap();
    let floor = build_time(&vm);
    let now = guest_now(&vm);
    assert!(now >= floor as f64, "clock {now} before the build {floor}");
    assert!(
        now < (floor + DAY) as f64,
        "clock {now} far past the build {floor}"
    );
    let journal = out(&vm, "journalctl -b -u baleen-time-early --no-pager");
    assert!(journal.contains("check the RTC battery"), "{journal}");
    let time = time_status(&vm);
    assert_eq!(time["steps"]["early"]["source"], "BuildTime", "{time}");
    // The HTTPS step is off ("null"): chrony starts anyway.
    assert_eq!(time["steps"]["https"]["result"], "skipped", "{time}");
    wait_until(
        &vm,
        "systemctl -q is-active chrony.service",
        Duration::from_secs(120),
    );
    assert!(
        out(
            &vm,
            "systemctl list-timers --all --no-pager baleen-time-save.timer"
        )
        .contains("baleen-time-save.timer")
    );

    // The saved clock: written by the (hourly) save service and at shutdown,
    // restored at boot when later than the clock.
    let ahead = floor + 400 * DAY;
    vm.run_ok(&format!(
        "date -s @{ahead} >/dev/null && systemctl start baleen-time-save.service"
    ))
    .unwrap();
    let saved = out(&vm, "cat /mnt/state/baleen/clock");
    let saved_epoch: u64 = out(&vm, &format!("date -u -d '{saved}' +%s"))
        .parse()
        .unwrap();
    assert!(saved_epoch.abs_diff(ahead) < 60, "saved {saved}");
    reboot(&mut vm);
    let now = guest_now(&vm);
    assert!(
        now >= ahead as f64,
        "saved clock not restored: {now} < {ahead}"
    );
    assert_eq!(time_status(&vm)["steps"]["early"]["source"], "SavedClock");

    // An RTC ahead of the clock moves it forward.
    let rtc = floor + 800 * DAY;
    vm.run_ok(&format!(
        "hwclock --noadjfile --utc --set --date \"$(date -u -d @{rtc} '+%Y-%m-%d %H:%M:%S')\""
    ))
    .unwrap();
    reboot(&mut vm);
    let now = guest_now(&vm);
    assert!(now >= rtc as f64, "RTC not used: {now} < {rtc}");
    // The kernel itself sets the clock from the RTC at boot (rtc_cmos, hctosys), so the
    // early step usually finds nothing left to do.
    let source = time_status(&vm)["steps"]["early"]["source"].clone();
    assert!(source == "Rtc" || source == "Unchanged", "{source}");
    vm.mark_passed();
}

/// Seconds (monotonic, from the journal) between two journal lines.
fn monotonic_of(vm: &Vm, unit_args: &str, pattern: &str) -> f64 {
    let line = out(
        vm,
        &format!(
            "journalctl -b -o short-monotonic --no-pager {unit_args} | grep -m1 -E '{pattern}'"
        ),
    );
    let inside = line
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(t, _)| t.trim().to_string())
        .unwrap_or_default();
    inside
        .parse()
        .unwrap_or_else(|_| panic!("no time in {line}"))
}

#[test]
fn https_date_steps_the_clock_then_ntp_keeps_it_and_heals() {
    let lan = systests::lan::Lan::new("time").unwrap();
    let scratch = Scratch::new("time-https");
    let https = HttpsTime::start(lan.ns(), scratch.path()).unwrap();
    let ntp = NtpServer::start(lan.ns(), scratch.path()).unwrap();
    https.set_answer(Answer {
        status: 204,
        date: DateSpec::Offset(0),
    });
    let image = scratch.image_with_config(
        "dev",
        &serde_json::json!({
            "deviceType": "qemux86-64",
            "developmentMode": true,
            "balenaRootCA": https.ca_base64(),
            "ntpServers": lan.host_addr(),
            "dnsServers": "null",
            "os": {"network": {"connectivity": {"uri": https.uri_https()}}}
        }),
    );
    // The RTC is in the past: the clock starts at the build time, minutes
    // behind the reference.
    let mut vm = Vm::builder("time-https")
        .disk(&image, vmharness::DiskFormat::Raw)
        .persist(true)
        .netns(Some(lan.ns()))
        .rtc_base("2020-01-01T00:00:00")
        .start()
        .unwrap();
    vm.wait_for_ssh(SSH_WAIT).unwrap();
    wait_until(
        &vm,
        &json_holds(
            "baleen status --json",
            ".time.steps.https.result == \"stepped\"",
        ),
        Duration::from_secs(300),
    );
    let offset = guest_offset(&vm);
    assert!(
        offset.abs() <= 2.0,
        "clock off by {offset} s after the HTTPS step; host clock {:.3}; the test server \
         answered {} requests\n{}",
        host_now(),
        https.requests().len(),
        time_story(&vm)
    );
    // The record names the two agreeing answers' dates and the clock before the step.
    let step = &time_status(&vm)["steps"]["https"];
    assert_eq!(step["dates"].as_array().map(Vec::len), Some(2), "{step}");
    assert!(step["clockBefore"].is_string(), "{step}");
    // The RTC (started in 2020) was written too.
    let rtc: f64 = out(&vm, "cat /sys/class/rtc/rtc0/since_epoch")
        .parse()
        .unwrap();
    assert!((rtc - guest_now(&vm)).abs() < 5.0, "RTC not written: {rtc}");
    let network_up = monotonic_of(&vm, "-u NetworkManager", "as default for IPv4");
    let stepped = monotonic_of(&vm, "-u baleen-time-https", "clock stepped");
    eprintln!(
        "time: network up → clock within 2 s: {:.1} s; accuracy after the step {offset:+.2} s",
        stepped - network_up
    );

    // chrony starts after the step and selects the LAN's server.
    wait_until(
        &vm,
        &format!("chronyc -n sources | grep -q '^\\^\\* {}'", lan.host_addr()),
        Duration::from_secs(300),
    );
    wait_until(
        &vm,
        "timedatectl show -p NTPSynchronized --value | grep -qx yes",
        Duration::from_secs(300),
    );
    // The NTP server DHCP offered (option 42) is a source too, per interface.
    wait_until(
        &vm,
        &format!(
            "grep -q 'pool {} ' /run/baleen/chrony/added_dhcp_*.sources",
            lan.host_addr()
        ),
        Duration::from_secs(60),
    );

    // Answers that must not be trusted: a captive portal (302), a 200, and
    // a Date before the build time. The clock stays where it is.
    vm.run_ok("systemctl stop chrony.service").unwrap();
    let floor = build_time(&vm);
    vm.run_ok(&format!("date -s @{} >/dev/null", host_now() as u64 - 3600))
        .unwrap();
    for (status, date, why) in [
        (302, DateSpec::Offset(0), "302"),
        (200, DateSpec::Offset(0), "200"),
        (
            204,
            DateSpec::Fixed(UNIX_EPOCH + Duration::from_secs(floor - DAY)),
            "build time",
        ),
    ] {
        https.set_answer(Answer { status, date });
        let seen = https.requests().len();
        vm.run_ok("systemctl --no-block restart baleen-time-https.service")
            .unwrap();
        https
            .wait_for_requests(seen + 2, Duration::from_secs(180))
            .unwrap();
        wait_until(
            &vm,
            &json_holds(
                "baleen status --json",
                &format!(".time.steps.https.why | test(\"{why}\")"),
            ),
            Duration::from_secs(60),
        );
        let offset = guest_offset(&vm);
        assert!(
            (offset + 3600.0).abs() < 30.0,
            "answer {status} moved the clock (offset {offset})"
        );
    }
    let started = Instant::now();
    https.set_answer(Answer {
        status: 204,
        date: DateSpec::Offset(0),
    });
    wait_until(
        &vm,
        &json_holds(
            "baleen status --json",
            ".time.steps.https.result == \"stepped\"",
        ),
        Duration::from_secs(180),
    );
    let offset = guest_offset(&vm);
    assert!(
        offset.abs() <= 2.0,
        "clock off by {offset} s after the trusted answer\n{}",
        time_story(&vm)
    );
    eprintln!(
        "time: a trusted answer after untrusted ones stepped the clock {:.1} s after it was served",
        started.elapsed().as_secs_f64()
    );
    vm.run_ok("systemctl start chrony.service").unwrap();
    wait_until(
        &vm,
        "chronyc -n sources | grep -q '^\\^\\*'",
        Duration::from_secs(300),
    );

    // NTP blocked and the clock moved: the health check restarts chronyd.
    vm.run_ok(
        "nft add table inet baleentest && \
         nft add chain inet baleentest out '{ type filter hook output priority 0; }' && \
         nft add rule inet baleentest out udp dport 123 drop && \
         date -s '+100 seconds' >/dev/null",
    )
    .unwrap();
    let started = Instant::now();
    vm.run_timeout(
        "systemctl start baleen-ntp-health.service",
        Duration::from_secs(300),
    )
    .unwrap();
    let detection = started.elapsed();
    let journal = out(&vm, "journalctl -b -u baleen-ntp-health --no-pager");
    assert!(
        journal.contains("NTP time lost synchronization - restarting chronyd"),
        "{journal}"
    );
    eprintln!(
        "time: chrony health check detected the lost synchronization in {:.1} s (plus up to the 10 min timer period)",
        detection.as_secs_f64()
    );
    // Unblocked: the next check brings fresh samples and chrony steps back.
    vm.run_ok("nft delete table inet baleentest").unwrap();
    vm.run_timeout(
        "systemctl start baleen-ntp-health.service",
        Duration::from_secs(300),
    )
    .unwrap();
    wait_until(
        &vm,
        "chronyc -n sources | grep -q '^\\^\\*'",
        Duration::from_secs(300),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while guest_offset(&vm).abs() > 2.0 {
        assert!(
            Instant::now() < deadline,
            "chrony never corrected the clock"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let status = out(&vm, "baleen status");
    assert!(status.contains("ntp             synchronized"), "{status}");

    // chronyd's stop is bounded: with no DNS server answering it was seen to take 11-24 s,
    // paid at every shutdown.
    assert_eq!(
        out(
            &vm,
            "systemctl show -p TimeoutStopUSec --value chrony.service"
        ),
        "5s"
    );
    vm.mark_passed();
    drop(vm);
    drop(ntp);
    drop(https);
}
