//! `baleen build`: build configuration → cached Debian root → baleen's files →
//! boot-stage initramfs and unified kernel image → boot partition tree →
//! fingerprint → disk image, renamed into place only when complete.

mod assemble;
mod bootfiles;
mod manifest;
pub mod time;
pub mod updatekey;

use anyhow::{Context, Result};
use buildconf::{BuildConfig, DeviceType, RawBuildConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Packages every image has, whatever the device type.
pub const BASE_PACKAGES: [&str; 24] = [
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "openssh-server",
    "e2fsprogs",
    "dosfstools",
    "iproute2",
    "ca-certificates",
    "busybox-static",
    "systemd-boot-efi",
    "mount",
    "zstd",
    "avahi-daemon",
    "libnss-mdns",
    "libnss-myhostname",
    "jq",
    "chrony",
    "dnsmasq-base",
    "iw",
    "wireless-regdb",
    "nftables",
    "util-linux-extra",
];

#[derive(clap::Args)]
pub struct Args {
    /// Device type slug (overrides the build file).
    #[arg(long)]
    pub device: Option<String>,
    /// Build file (TOML; the analogue of local.conf). Without it, defaults apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory for <device>.img and <device>.manifest.json.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Where root filesystem tarballs are cached between builds.
    #[arg(long, env = "BALEEN_CACHE_DIR", default_value = "/var/cache/baleen")]
    pub cache_dir: PathBuf,
    /// Directory of device-type files (`<slug>.toml`) to use instead of the built-in ones.
    #[arg(long)]
    pub devices_dir: Option<PathBuf>,
    /// The static baleen-boot binary (default: next to this baleen binary).
    #[arg(long)]
    pub boot_stage: Option<PathBuf>,
    /// Private key (ed25519, PKCS#8 PEM) that signs update bundles for this image; the image
    /// trusts its public half. Generated (mode 0600) when the file does not exist. Keep it and
    /// back it up: bundles for devices running this image must be signed with it.
    /// [default: <cache-dir>/update-keys/baleen-update.key]
    #[arg(long, env = "BALEEN_UPDATE_KEY", value_name = "PATH")]
    pub update_key: Option<PathBuf>,
}

/// Facts about a finished build.
pub struct Built {
    pub image: PathBuf,
    pub manifest: manifest::Manifest,
}

pub fn run(args: Args) -> Result<()> {
    let built = build(&args)?;
    let m = &built.manifest;
    println!("{}", built.image.display());
    eprintln!(
        "built {} ({} {}, {} MiB image, root filesystem {} MiB) in {:.1} s, root filesystem cache {}",
        built.image.display(),
        m.device,
        m.os_version,
        m.image.size_bytes >> 20,
        m.rootfs.bytes >> 20,
        m.build_seconds,
        m.rootfs.cache
    );
    Ok(())
}

fn load_config(args: &Args) -> Result<BuildConfig> {
    let mut raw = match &args.config {
        Some(path) => RawBuildConfig::load(path)?,
        None => RawBuildConfig::from_toml_str("", "defaults")?,
    };
    if let Some(device) = &args.device {
        raw.device = Some(device.clone());
    }
    let device_types = match &args.devices_dir {
        Some(dir) => DeviceType::load_dir(dir)?,
        None => DeviceType::builtin(),
    };
    Ok(raw.validate(&device_types)?)
}

fn step(started: Instant, what: &str) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

pub fn build(args: &Args) -> Result<Built> {
    let started = Instant::now();
    let config = load_config(args)?;
    // Refuse what cannot boot before the long work, not after it.
    let arch = config.device.arch.debian();
    if bootimage::uki::stub_path(arch).is_none() {
        return Err(bootimage::Error::NoEfiStub(arch.to_string()).into());
    }
    let exe = std::env::current_exe().context("locating the baleen binary")?;
    let stage_binary = args
        .boot_stage
        .clone()
        .unwrap_or_else(|| exe.with_file_name("baleen-boot"));
    if !stage_binary.exists() {
        anyhow::bail!(
            "boot stage binary {} not found: build it with scripts/build.sh or pass --boot-stage",
            stage_binary.display()
        );
    }
    let update_key = update_key(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output directory {}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out)?;
    let slug = config.device.slug.clone();
    let image = out.join(format!("{slug}.img"));
    let partial = out.join(format!(".{slug}.img.partial"));
    // Check the output directory is writable before the long work starts.
    std::fs::write(&partial, b"").with_context(|| format!("writing into {}", out.display()))?;
    std::fs::remove_file(&partial)?;

    let work = tempfile::Builder::new()
        .prefix("baleen-build-")
        .tempdir_in(&out)
        .context("creating a work directory")?;
    let result = build_in(
        &config,
        args,
        &stage_binary,
        &exe,
        &update_key,
        work.path(),
        &partial,
        started,
    );
    let built = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &image)
        .with_context(|| format!("moving the image to {}", image.display()))?;
    let mut manifest = built;
    manifest.image.file = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    manifest.build_seconds = started.elapsed().as_secs_f64();
    manifest.write(&out.join(format!("{slug}.manifest.json")))?;
    step(started, "done");
    Ok(Built { image, manifest })
}

/// The update signing key's public half, the private key loaded (or generated) from
/// `--update-key` before the long work so that a bad key file fails the build at once.
fn update_key(args: &Args) -> Result<bundle::PublicKey> {
    let path = updatekey::key_path(args.update_key.as_deref(), &args.cache_dir);
    let (key, origin) = updatekey::load_or_generate(&path, "--update-key")?;
    match origin {
        updatekey::Origin::Generated => tracing::warn!(
            "generated the update signing key {} (key id {}): keep it and back it up, it is \
             not in the image; every update bundle for devices running this image must be \
             signed with it (baleen bundle create --key {})",
            path.display(),
            key.key_id(),
            path.display()
        ),
        updatekey::Origin::Loaded => tracing::info!(
            "update signing key {} (key id {})",
            path.display(),
            key.key_id()
        ),
    }
    Ok(key.public_key())
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    config: &BuildConfig,
    args: &Args,
    stage_binary: &Path,
    baleen_binary: &Path,
    update_key: &bundle::PublicKey,
    work: &Path,
    partial: &Path,
    started: Instant,
) -> Result<manifest::Manifest> {
    let epoch = time::build_epoch();
    let timestamp = time::timestamp(epoch);
    let version = config.hostos_version();

    step(
        started,
        &format!(
            "root filesystem: Debian {} packages",
            config.release.codename()
        ),
    );
    let packages: Vec<String> = BASE_PACKAGES
        .iter()
        .map(|p| p.to_string())
        .chain(
            config
                .debian_packages()
                .iter()
                .map(|p| p.as_str().to_string()),
        )
        .collect();
    let recipe = rootfs::bootstrap::Recipe::new(
        config.release.codename(),
        config.device.arch.debian(),
        config.mirror.as_str(),
        packages,
    )
    .with_initramfs_modules(
        config
            .device
            .boot_modules
            .iter()
            .map(|m| m.as_str().to_string()),
    );
    let (tarball, cache) = rootfs::bootstrap::tarball(&recipe, &args.cache_dir)?;
    let staging = work.join("rootfs");
    rootfs::bootstrap::unpack(&tarball, &staging)?;
    step(started, "root filesystem: kernel modules");
    let trees: Vec<&str> = config
        .device
        .omit_modules
        .iter()
        .map(|t| t.as_str())
        .collect();
    let omitted = rootfs::modules::omit(&staging, &trees)?;
    let (plain, packed) = rootfs::modules::compress(&staging)?;
    rootfs::modules::reindex(&staging)?;
    let static_nodes = rootfs::modules::write_static_nodes(&staging)?;
    tracing::debug!(
        "{static_nodes} on-demand device nodes in /{}",
        rootfs::modules::STATIC_NODES
    );
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    tracing::info!(
        "kernel modules: {} trees the {} device type cannot use omitted ({:.1} MiB); {:.1} MiB \
         of plain modules stored zstd-compressed in {:.1} MiB",
        trees.len(),
        config.device.slug,
        mib(omitted),
        mib(plain),
        mib(packed)
    );

    step(started, "root filesystem: baleen files");
    let os_release = rootfs::osrelease::OsRelease {
        version: version.clone(),
        meta_version: config.meta_version.to_string(),
        board_revision: config.board_revision,
        slug: config.device.slug.clone(),
        machine: config.device.machine.clone(),
        development: config.development,
        debian_release: config.release.codename().to_string(),
    };
    let customization = rootfs::customize::Customization {
        os_release: os_release.clone(),
        baleen_binary,
        timestamp: timestamp.clone(),
    };
    rootfs::customize::apply(&staging, &customization)?;
    // The public update key, before the fingerprint so that it is listed there.
    updatekey::install_public_key(&staging, update_key)?;

    step(started, "boot stage: initramfs and unified kernel image");
    let modules: Vec<String> = config
        .device
        .boot_modules
        .iter()
        .map(|m| m.as_str().to_string())
        .collect();
    let stage_modules = bootstage::role_modules(bootstage::Role::Stage, &modules);
    let root_modules = bootstage::role_modules(bootstage::Role::Root, &modules);
    let spec = |role| bootimage::archive::Spec {
        role,
        root: &staging,
        stage_binary,
        os_version: version.clone(),
        device: config.device.slug.clone(),
        development: config.development,
        modules: match role {
            bootstage::Role::Stage => &stage_modules,
            bootstage::Role::Root => &root_modules,
        },
        root_cmdline: config.kernel_cmdline(),
    };
    // The root's own initrd first: it lives in the root filesystem, next to
    // the kernel it belongs to.
    let root_initrd = bootimage::archive::assemble(&spec(bootstage::Role::Root))?;
    let root_initrd_path = staging.join(bootstage::ROOT_INITRD);
    root_initrd.write_compressed(std::fs::File::create(&root_initrd_path)?)?;
    let initramfs = bootimage::archive::assemble(&spec(bootstage::Role::Stage))?;
    let initrd = work.join("initramfs.cpio");
    initramfs.write_compressed(std::fs::File::create(&initrd)?)?;
    let kernel_version = bootimage::modules::kernel_version(&staging)?;
    let cmdline = work.join("cmdline.txt");
    std::fs::write(&cmdline, bootstage::stage_cmdline(&config.kernel_cmdline()))?;
    let osrel = work.join("os-release");
    std::fs::write(&osrel, os_release.render())?;
    let uki = work.join("uki.efi");
    bootimage::uki::build(
        &bootimage::uki::Parts {
            stub: &bootimage::uki::find_stub(&staging, config.device.arch.debian())?,
            os_release: &osrel,
            cmdline: &cmdline,
            kernel: &bootstage::resolve_in_root(&staging, bootstage::ROOT_KERNEL)?,
            initrd: &initrd,
        },
        &uki,
    )?;

    step(started, "boot partition files");
    let image_name = format!("baleen-image-{}-{timestamp}", config.device.slug);
    let boot_tree = work.join("boot");
    let files = bootfiles::files(config, &os_release.render(), &image_name);
    bootfiles::write_tree(&boot_tree, &files, &config.device.efi_boot_file, &uki)?;
    copy_tree(&boot_tree, &staging.join("resin-boot"))?;

    step(started, "fingerprint");
    rootfs::fingerprint::write_root(&staging, &rootfs::customize::runtime_excludes())?;
    let rootfs_bytes = assemble::tree_bytes(&staging)?;

    step(started, "disk image");
    let layout = diskimage::Layout::compute(&config.device.sizes);
    let parts = assemble::write_image(partial, &layout, &staging, &boot_tree)?;

    step(started, "checksum");
    let image = manifest::ImageFacts::of(partial)?;
    Ok(manifest::Manifest::new(
        config,
        &version,
        &kernel_version,
        image,
        &parts,
        &staging,
        rootfs_bytes,
        cache,
        initramfs.len(),
        update_key.key_id(),
    ))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    subprocess::Cmd::new("cp")
        .package("coreutils")
        .arg("-a")
        .arg(from)
        .arg(to)
        .run()?;
    Ok(())
}
