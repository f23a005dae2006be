//! Contract tests of the BlueZ backend against python-dbusmock's `bluez5` template (extended by
//! `tests/bluez/bluez_le.py` with LEAdvertisingManager1 and GattManager1) on a private D-Bus bus.
//!
//! Each test starts its own `dbus-daemon` on a unix socket in a temporary directory and its own
//! mock (`/usr/bin/python3 -m dbusmock`, Debian's python, where python3-dbusmock lives). bluer and
//! btleplug reach "the system bus" through libdbus, which reads `DBUS_SYSTEM_BUS_ADDRESS` once per
//! process: so this binary points that variable at one socket path before anything connects, and
//! runs its tests one after another, each with a fresh bus at that same path. The test side talks
//! to the mock through its own connection opened on the explicit address.
//!
//! The tests skip (printing why) only when `dbus-daemon` or python3-dbusmock is missing.
//! `BLUEZ_TEST_LOG=1` echoes the backend's logs to stderr and keeps the mock's log
//! (`$TMPDIR/bluezoned-bluez-test-<pid>/mock.log`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bluezone_protocol::{Aem, PeerId, RollingId, Rpi};
use bluezoned::clock::Clock;
use bluezoned::radio::bluez::{BluezConfig, BluezRadio};
use bluezoned::radio::{Broadcast, Radio, RadioError, RadioIo, Reception};
use dbus::arg::{prop_cast, AppendAll, PropMap, ReadAll, RefArg, Variant};
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
use dbus::blocking::Connection;
use dbus::channel::Channel;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const PYTHON: &str = "/usr/bin/python3";
const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
const BLUEZ_MOCK_IFACE: &str = "org.bluez.Mock";
const ADAPTER_IFACE: &str = "org.bluez.Adapter1";
const DEVICE_IFACE: &str = "org.bluez.Device1";
const UUID_BLUEZONE: &str = "00004e56-0000-1000-8000-00805f9b34fb";
const UUID_GAEN: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";
const UUID_IOS_SERVICE: &str = "00004e56-73f5-4bc4-a12f-17d1ad07a667";
const UUID_IOS_CHAR: &str = "00004e56-73f5-4bc4-a12f-17d1ad07a689";

/// The daemon's clock in these tests: receptions must carry exactly this time.
const NOW_S: i64 = 1_600_000_000;

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        NOW_S * 1000 + 250
    }
}

fn id(b: u8) -> RollingId {
    RollingId(std::array::from_fn(|i| b ^ (i as u8).wrapping_mul(17)))
}
fn rpi(b: u8) -> Rpi {
    Rpi(std::array::from_fn(|i| {
        b.wrapping_mul(7).wrapping_add(i as u8)
    }))
}
fn aem(b: u8) -> Aem {
    Aem([0x40, b, 0, 0])
}

// ---------------------------------------------------------------------------------------------
// Prerequisites, the process-wide bus address, logs.

fn missing_tools() -> Option<String> {
    let daemon = Command::new("dbus-daemon")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(daemon, Ok(s) if s.success()) {
        return Some("dbus-daemon is not installed (apt-get install dbus)".into());
    }
    let mock = Command::new(PYTHON)
        .args(["-c", "import dbusmock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(mock, Ok(s) if s.success()) {
        return Some(format!(
            "{PYTHON} cannot import dbusmock (apt-get install python3-dbusmock)"
        ));
    }
    None
}

/// Skips the test (with a message) when the tools are missing; otherwise serialises the tests.
macro_rules! setup {
    () => {{
        if let Some(why) = missing_tools() {
            println!("SKIPPED {}: {why}", module_path!());
            eprintln!("SKIPPED {}: {why}", module_path!());
            return;
        }
        serial()
    }};
}

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_process();
    guard
}

/// The directory holding the bus socket; its path is fixed for the whole process.
fn socket_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("bluezoned-bluez-test-{}", std::process::id()))
    })
}

fn bus_address() -> String {
    format!("unix:path={}", socket_dir().join("bus").display())
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        if std::env::var_os("BLUEZ_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

fn init_process() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Before any libdbus connection exists (libdbus caches the address), with the other
        // tests of this binary waiting on the serial lock.
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", bus_address());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("bluezoned=debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

// ---------------------------------------------------------------------------------------------
// The private bus, the mock, and the test's own client connection.

struct Bus {
    daemon: Option<Child>,
    mock: Option<Child>,
    client: Option<Connection>,
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Bus {
    /// A bus with no bluetoothd on it.
    fn start() -> Bus {
        let dir = socket_dir();
        std::fs::create_dir_all(dir).expect("creating the socket directory");
        let socket = dir.join("bus");
        let _ = std::fs::remove_file(&socket);
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("writing the bus config");
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon");
        let client = wait_for("the private bus", Duration::from_secs(10), || {
            let mut ch = Channel::open_private(&bus_address()).ok()?;
            ch.register().ok()?;
            Some(Connection::from(ch))
        });
        Bus {
            daemon: Some(daemon),
            mock: None,
            client: Some(client),
        }
    }

    fn client(&self) -> &Connection {
        self.client.as_ref().expect("bus is running")
    }

    /// Starts bluetoothd's stand-in and waits until it owns org.bluez.
    fn start_mock(&mut self) {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bluez/bluez_le.py");
        let log = std::fs::File::create(socket_dir().join("mock.log")).expect("mock log");
        let mock = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--system", "--template"])
            .arg(&template)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address())
            .stdout(log.try_clone().expect("mock log"))
            .stderr(log)
            .spawn()
            .expect("starting python3 -m dbusmock");
        self.mock = Some(mock);
        wait_for("the mock to own org.bluez", Duration::from_secs(15), || {
            let (has,): (bool,) = self
                .client()
                .with_proxy(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    Duration::from_secs(2),
                )
                .method_call("org.freedesktop.DBus", "NameHasOwner", ("org.bluez",))
                .ok()?;
            has.then_some(())
        });
    }

    fn kill_mock(&mut self) {
        if let Some(mut m) = self.mock.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }

    /// Kills the bus itself, then the mock.
    fn kill_all(&mut self) {
        self.client = None;
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        self.kill_mock();
        let _ = std::fs::remove_file(socket_dir().join("bus"));
    }

    fn call<A: AppendAll, R: ReadAll>(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        args: A,
    ) -> R {
        self.try_call(dest, path, iface, method, args)
            .unwrap_or_else(|e| panic!("{iface}.{method} on {path}: {e}"))
    }

    fn try_call<A: AppendAll, R: ReadAll>(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        args: A,
    ) -> Result<R, dbus::Error> {
        self.client()
            .with_proxy(dest, path, Duration::from_secs(5))
            .method_call(iface, method, args)
    }

    fn add_adapter(&self, name: &str, max_adverts: u8, reported: u8) -> String {
        let (path,): (String,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "AddLEAdapter",
            (name, "bluezoned-test", max_adverts, reported),
        );
        path
    }

    fn add_device(&self, adapter: &str, address: &str) -> String {
        let (path,): (String,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "AddDevice",
            (adapter, address, "phone"),
        );
        path
    }

    fn set<T: dbus::arg::Arg + dbus::arg::Append>(
        &self,
        path: &str,
        iface: &str,
        name: &str,
        value: T,
    ) {
        self.client()
            .with_proxy("org.bluez", path, Duration::from_secs(5))
            .set(iface, name, value)
            .unwrap_or_else(|e| panic!("setting {iface}.{name} on {path}: {e}"));
    }

    fn set_rssi(&self, dev: &str, rssi: i16) {
        self.set(dev, DEVICE_IFACE, "RSSI", rssi);
    }

    fn set_manufacturer_data(&self, dev: &str, company: u16, data: &[u8]) {
        let map: HashMap<u16, Variant<Vec<u8>>> =
            HashMap::from([(company, Variant(data.to_vec()))]);
        self.set(dev, DEVICE_IFACE, "ManufacturerData", map);
    }

    fn set_service_data(&self, dev: &str, uuid: &str, data: &[u8]) {
        let map: HashMap<String, Variant<Vec<u8>>> =
            HashMap::from([(uuid.to_string(), Variant(data.to_vec()))]);
        self.set(dev, DEVICE_IFACE, "ServiceData", map);
    }

    /// How often `method` was called on the mock object at `path`.
    fn calls(&self, path: &str, method: &str) -> usize {
        type Calls = Vec<(u64, Vec<Variant<Box<dyn RefArg>>>)>;
        let (calls,): (Calls,) =
            self.call("org.bluez", path, MOCK_IFACE, "GetMethodCalls", (method,));
        calls.len()
    }

    fn advertisements(&self, adapter: &str) -> Vec<Adv> {
        type Row = (
            String,
            dbus::Path<'static>,
            String,
            Vec<String>,
            HashMap<u16, Vec<u8>>,
            HashMap<String, Vec<u8>>,
            String,
            Vec<String>,
        );
        let (rows,): (Vec<Row>,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetAdvertisements",
            (adapter,),
        );
        rows.into_iter()
            .map(
                |(owner, path, kind, uuids, manufacturer, service_data, name, includes)| Adv {
                    owner,
                    path: path.to_string(),
                    kind,
                    uuids,
                    manufacturer,
                    service_data,
                    name,
                    includes,
                },
            )
            .collect()
    }

    fn registrations(&self, adapter: &str) -> u32 {
        let (n,): (u32,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetAdvertisementRegistrations",
            (adapter,),
        );
        n
    }

    /// (owner, app path, characteristic path, UUID, flags) of registered GATT characteristics.
    fn characteristics(&self, adapter: &str) -> Vec<(String, String, String, String, Vec<String>)> {
        type Row = (
            String,
            dbus::Path<'static>,
            dbus::Path<'static>,
            String,
            Vec<String>,
        );
        let (rows,): (Vec<Row>,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetGattCharacteristics",
            (adapter,),
        );
        rows.into_iter()
            .map(|(o, a, c, u, f)| (o, a.to_string(), c.to_string(), u, f))
            .collect()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.kill_all();
        // The bus config and the mock's log; BLUEZ_TEST_LOG keeps them for a look.
        if std::env::var_os("BLUEZ_TEST_LOG").is_none() {
            let _ = std::fs::remove_dir_all(socket_dir());
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Adv {
    owner: String,
    path: String,
    kind: String,
    uuids: Vec<String>,
    manufacturer: HashMap<u16, Vec<u8>>,
    service_data: HashMap<String, Vec<u8>>,
    name: String,
    includes: Vec<String>,
}

impl Adv {
    fn is_bluezone(&self, id: &RollingId) -> bool {
        self.kind == "peripheral"
            && self.uuids == [UUID_BLUEZONE]
            && self.manufacturer == HashMap::from([(0x22B5, id.0.to_vec())])
            && self.service_data.is_empty()
            && self.name.is_empty()
            && self.includes.is_empty()
    }
    fn is_gaen(&self, rpi: &Rpi, aem: &Aem) -> bool {
        let mut data = rpi.0.to_vec();
        data.extend_from_slice(&aem.0);
        self.kind == "broadcast"
            && self.uuids == [UUID_GAEN]
            && self.service_data == HashMap::from([(UUID_GAEN.to_string(), data)])
            && self.manufacturer.is_empty()
            && self.name.is_empty()
            && self.includes.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// The radio under test.

fn test_config() -> BluezConfig {
    BluezConfig {
        adapter: Some("hci0".into()),
        discovery_stall_timeout: Duration::from_secs(60),
        alternate_period: Duration::from_millis(300),
        ios_read_interval: Duration::ZERO,
        ios_read_timeout: Duration::from_secs(5),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(5),
        ..BluezConfig::default()
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    broadcast: watch::Sender<Broadcast>,
    heard: mpsc::Receiver<Reception>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), RadioError>>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Harness {
    fn start(cfg: BluezConfig, initial: Broadcast) -> Harness {
        let rt = runtime();
        let radio = rt
            .block_on(BluezRadio::connect(cfg, std::sync::Arc::new(FixedClock)))
            .expect("BluezRadio::connect against the mock");
        assert_eq!(radio.adapter(), "hci0");
        let (broadcast, broadcast_rx) = watch::channel(initial);
        let (heard_tx, heard) = mpsc::channel(4096);
        let shutdown = CancellationToken::new();
        let io = RadioIo {
            broadcast: broadcast_rx,
            heard: heard_tx,
            shutdown: shutdown.clone(),
        };
        let task = rt.spawn(Box::new(radio).run(io));
        Harness {
            rt,
            broadcast,
            heard,
            shutdown,
            task: Some(task),
        }
    }

    fn recv(&mut self, limit: Duration) -> Option<Reception> {
        let heard = &mut self.heard;
        self.rt.block_on(async {
            tokio::time::timeout(limit, heard.recv())
                .await
                .ok()
                .flatten()
        })
    }

    /// The next reception whose peer is `peer` (others in between are returned too).
    fn recv_peer(&mut self, peer: PeerId, limit: Duration) -> (Reception, Vec<Reception>) {
        let start = Instant::now();
        let mut others = Vec::new();
        while let Some(left) = limit.checked_sub(start.elapsed()) {
            match self.recv(left) {
                Some(r) if r.peer == peer => return (r, others),
                Some(r) => others.push(r),
                None => break,
            }
        }
        panic!(
            "no reception of {peer:?} within {limit:?} (got {others:?})\nlogs:\n{}",
            logs()
        );
    }

    fn drain(&mut self) -> Vec<Reception> {
        let mut out = Vec::new();
        while let Ok(r) = self.heard.try_recv() {
            out.push(r);
        }
        out
    }

    fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
            .expect("the radio stops within 5 s of shutdown")
            .expect("the radio task did not panic");
        assert!(result.is_ok(), "radio ended with {result:?}");
    }
}

fn reception(peer: PeerId, aem: Option<Aem>, rssi: i8, tx_power: Option<i8>) -> Reception {
    Reception {
        peer,
        aem,
        rssi,
        tx_power,
        time: NOW_S,
    }
}

// ---------------------------------------------------------------------------------------------
// (a) advertisements

#[test]
fn advertisements_carry_the_exact_fields_and_follow_the_broadcast() {
    let _serial = setup!();
    let mut bus = Bus::start();
    bus.start_mock();
    bus.add_adapter("hci0", 2, 2);

    let b1 = Broadcast {
        bluezone: Some(id(1)),
        gaen: Some((rpi(1), aem(1))),
        epoch: 1,
    };
    let h = Harness::start(test_config(), b1);
    let ads = wait_for("both adverts", Duration::from_secs(10), || {
        let ads = bus.advertisements("hci0");
        (ads.len() == 2).then_some(ads)
    });
    let bz = ads
        .iter()
        .find(|a| a.kind == "peripheral")
        .expect("a connectable advert");
    let gaen = ads
        .iter()
        .find(|a| a.kind == "broadcast")
        .expect("a non-connectable advert");
    // Field by field, so that a failure says which one.
    assert_eq!(bz.uuids, [UUID_BLUEZONE]);
    assert_eq!(
        bz.manufacturer,
        HashMap::from([(0x22B5u16, id(1).0.to_vec())])
    );
    assert!(
        bz.service_data.is_empty() && bz.name.is_empty() && bz.includes.is_empty(),
        "{bz:?}"
    );
    assert_eq!(gaen.uuids, [UUID_GAEN]);
    let gaen_data = &gaen.service_data[UUID_GAEN];
    assert_eq!(gaen_data.len(), 20);
    assert_eq!(&gaen_data[..16], &rpi(1).0);
    assert_eq!(&gaen_data[16..], &aem(1).0);
    assert!(
        gaen.manufacturer.is_empty() && gaen.name.is_empty(),
        "{gaen:?}"
    );
    assert!(bz.is_bluezone(&id(1)) && gaen.is_gaen(&rpi(1), &aem(1)));
    assert_eq!(bus.registrations("hci0"), 2, "registered once each");

    // A new broadcast replaces both, promptly, and nothing of the old one stays on air.
    let b2 = Broadcast {
        bluezone: Some(id(2)),
        gaen: Some((rpi(2), aem(2))),
        epoch: 2,
    };
    let t = Instant::now();
    h.broadcast.send_replace(b2);
    wait_for("the new adverts", Duration::from_secs(5), || {
        let ads = bus.advertisements("hci0");
        (ads.len() == 2
            && ads.iter().any(|a| a.is_bluezone(&id(2)))
            && ads.iter().any(|a| a.is_gaen(&rpi(2), &aem(2))))
        .then_some(())
    });
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "switch took {:?}",
        t.elapsed()
    );
    assert_eq!(bus.registrations("hci0"), 4);

    // Only Bluezone now: the GAEN advert goes.
    h.broadcast.send_replace(Broadcast {
        bluezone: Some(id(3)),
        gaen: None,
        epoch: 3,
    });
    wait_for("the Bluezone-only advert", Duration::from_secs(5), || {
        let ads = bus.advertisements("hci0");
        (ads.len() == 1 && ads[0].is_bluezone(&id(3))).then_some(())
    });

    // The broadcast did not change: nothing is re-registered.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(bus.registrations("hci0"), 5);

    // Shutdown unregisters.
    h.stop();
    wait_for(
        "the adverts to be unregistered",
        Duration::from_secs(5),
        || bus.advertisements("hci0").is_empty().then_some(()),
    );
}

#[test]
fn advertisements_alternate_when_the_adapter_holds_only_one() {
    let _serial = setup!();
    let b = Broadcast {
        bluezone: Some(id(7)),
        gaen: Some((rpi(7), aem(7))),
        epoch: 1,
    };
    // First the adapter says so (SupportedInstances = 1), then it claims 2 but refuses the second
    // registration with "Maximum advertisements reached".
    for (reported, expected_log) in [
        (1u8, "holds only one advertisement at a time"),
        (2u8, "Maximum advertisements reached"),
    ] {
        let mut bus = Bus::start();
        bus.start_mock();
        bus.add_adapter("hci0", 1, reported);
        let h = Harness::start(test_config(), b);
        let (mut saw_bluezone, mut saw_gaen) = (false, false);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) && !(saw_bluezone && saw_gaen) {
            let ads = bus.advertisements("hci0");
            assert!(
                ads.len() <= 1,
                "two adverts on an adapter holding one: {ads:?}"
            );
            saw_bluezone |= ads.iter().any(|a| a.is_bluezone(&id(7)));
            saw_gaen |= ads.iter().any(|a| a.is_gaen(&rpi(7), &aem(7)));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            saw_bluezone && saw_gaen,
            "both layouts took turns (reported {reported})"
        );
        let log = logs();
        assert!(
            log.contains(expected_log),
            "log says why ({expected_log}):\n{log}"
        );
        assert!(
            log.contains("alternating Bluezone and GAEN adverts"),
            "{log}"
        );
        h.stop();
        bus.kill_all();
    }
}

// ---------------------------------------------------------------------------------------------
// (b) GATT

fn read_value(bus: &Bus, owner: &str, chr: &str, offset: u16) -> Result<Vec<u8>, dbus::Error> {
    let mut options = PropMap::new();
    options.insert(
        "device".into(),
        Variant(Box::new(dbus::Path::from(
            "/org/bluez/hci0/dev_11_22_33_44_55_66",
        ))),
    );
    options.insert("mtu".into(), Variant(Box::new(23u16)));
    options.insert("link".into(), Variant(Box::new("LE".to_string())));
    if offset > 0 {
        options.insert("offset".into(), Variant(Box::new(offset)));
    }
    let (value,): (Vec<u8>,) = bus.try_call(
        owner,
        chr,
        "org.bluez.GattCharacteristic1",
        "ReadValue",
        (options,),
    )?;
    Ok(value)
}

#[test]
fn gatt_read_returns_the_id_current_at_read_time() {
    let _serial = setup!();
    let mut bus = Bus::start();
    bus.start_mock();
    let adapter = bus.add_adapter("hci0", 2, 2);
    let h = Harness::start(
        test_config(),
        Broadcast {
            bluezone: Some(id(1)),
            gaen: None,
            epoch: 1,
        },
    );
    let chars = wait_for("RegisterApplication", Duration::from_secs(10), || {
        let c = bus.characteristics("hci0");
        (!c.is_empty()).then_some(c)
    });
    assert_eq!(chars.len(), 1, "{chars:?}");
    let (owner, app, chr, uuid, flags) = chars[0].clone();
    assert_eq!(uuid, UUID_IOS_CHAR);
    assert_eq!(flags, ["read"]);

    // The app's objects, as bluetoothd reads them: a primary service with the iOS UUID owning
    // the characteristic.
    let (objects,): (HashMap<dbus::Path<'static>, HashMap<String, PropMap>>,) = bus.call(
        &owner,
        &app,
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        (),
    );
    let chr_props = &objects[&dbus::Path::from(chr.clone())]["org.bluez.GattCharacteristic1"];
    let service: &dbus::Path<'static> = prop_cast(chr_props, "Service").expect("Service");
    let svc_props = &objects[service]["org.bluez.GattService1"];
    assert_eq!(
        prop_cast::<String>(svc_props, "UUID").map(String::as_str),
        Some(UUID_IOS_SERVICE)
    );
    assert_eq!(prop_cast::<bool>(svc_props, "Primary"), Some(&true));

    assert_eq!(
        read_value(&bus, &owner, &chr, 0).expect("ReadValue"),
        id(1).0
    );

    // The ID changes: the next read returns the new one, with no re-registration.
    h.broadcast.send_replace(Broadcast {
        bluezone: Some(id(2)),
        gaen: None,
        epoch: 2,
    });
    assert_eq!(
        read_value(&bus, &owner, &chr, 0).expect("ReadValue"),
        id(2).0
    );
    assert_eq!(
        read_value(&bus, &owner, &chr, 5).expect("ReadValue at 5"),
        &id(2).0[5..]
    );
    let offset_err = read_value(&bus, &owner, &chr, 13).expect_err("offset past the end");
    assert_eq!(offset_err.name(), Some("org.bluez.Error.InvalidOffset"));
    assert_eq!(bus.calls(&adapter, "RegisterApplication"), 1);
    assert_eq!(bus.characteristics("hci0")[0].1, app, "same application");

    // No ID: the read fails rather than returning something stale.
    h.broadcast.send_replace(Broadcast::default());
    let err = read_value(&bus, &owner, &chr, 0).expect_err("no ID to read");
    assert_eq!(err.name(), Some("org.bluez.Error.Failed"));
    h.stop();
}

// ---------------------------------------------------------------------------------------------
// (c) receptions

#[test]
fn mock_devices_become_receptions() {
    let _serial = setup!();
    let mut bus = Bus::start();
    bus.start_mock();
    let adapter = bus.add_adapter("hci0", 2, 2);
    let mut h = Harness::start(test_config(), Broadcast::default());
    wait_for("StartDiscovery", Duration::from_secs(10), || {
        (bus.calls(&adapter, "StartDiscovery") >= 1).then_some(())
    });
    // Duplicate reports were asked for, so RSSI updates keep coming.
    let filter: PropMap = bus
        .client()
        .with_proxy("org.bluez", &adapter, Duration::from_secs(5))
        .get(ADAPTER_IFACE, "DiscoveryFilter")
        .expect("the discovery filter");
    assert_eq!(
        prop_cast::<bool>(&filter, "DuplicateData"),
        Some(&true),
        "{filter:?}"
    );

    // Bluezone Android: manufacturer data 0x22B5 → the ID; RSSI and TX power carried along.
    let d1 = bus.add_device("hci0", "AA:00:00:00:00:01");
    bus.set_rssi(&d1, -60);
    bus.set(&d1, DEVICE_IFACE, "TxPower", -7i16);
    bus.set_manufacturer_data(&d1, 0x22B5, &id(1).0);
    let r = h
        .recv(Duration::from_secs(5))
        .expect("a reception for the Bluezone device");
    assert_eq!(r, reception(PeerId::Bluezone(id(1)), None, -60, Some(-7)));

    // Not Bluezone or GAEN, or malformed: nothing. (The GAEN device below comes next.)
    let d2 = bus.add_device("hci0", "AA:00:00:00:00:02");
    bus.set_manufacturer_data(&d2, 0x22B5, &[1; 11]);
    let d3 = bus.add_device("hci0", "AA:00:00:00:00:03");
    bus.set_manufacturer_data(&d3, 0x004C, &[0x02, 0x15, 1, 2, 3]);
    let d4 = bus.add_device("hci0", "AA:00:00:00:00:04");
    bus.set_service_data(&d4, UUID_GAEN, &[9; 19]);

    // GAEN: service data 0xFD6F → RPI + AEM.
    let d5 = bus.add_device("hci0", "AA:00:00:00:00:05");
    bus.set_rssi(&d5, -70);
    let mut data = rpi(5).0.to_vec();
    data.extend_from_slice(&aem(5).0);
    bus.set_service_data(&d5, UUID_GAEN, &data);
    let r = h
        .recv(Duration::from_secs(5))
        .expect("a reception for the GAEN device");
    assert_eq!(
        r,
        reception(PeerId::Gaen(rpi(5)), Some(aem(5)), -70, Some(0))
    );

    // Each new report (here an RSSI change) is another reception.
    bus.set_rssi(&d1, -55);
    let r = h
        .recv(Duration::from_secs(5))
        .expect("a reception for the RSSI update");
    assert_eq!(r, reception(PeerId::Bluezone(id(1)), None, -55, Some(-7)));
    bus.set_rssi(&d5, -71);
    let r = h
        .recv(Duration::from_secs(5))
        .expect("a reception for the RSSI update");
    assert_eq!(
        r,
        reception(PeerId::Gaen(rpi(5)), Some(aem(5)), -71, Some(0))
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.drain(), [], "one reception per report");
    h.stop();
}

// ---------------------------------------------------------------------------------------------
// (d) resilience: bluetoothd restarting, the bus going away, the adapter off or removed

#[test]
fn bluetoothd_restart_bus_loss_power_off_and_adapter_removal_are_survived() {
    let _serial = setup!();
    let mut bus = Bus::start();
    bus.start_mock();
    bus.add_adapter("hci0", 2, 2);
    let mut h = Harness::start(test_config(), Broadcast::default());
    let limit = Duration::from_secs(10);

    // Receptions resume once a device on a (re)started stack is heard. Discovery may not have
    // started yet when the device appears, so its data is refreshed until one gets through.
    let hear = |bus: &Bus, h: &mut Harness, address: &str, n: u8| {
        let dev = bus.add_device("hci0", address);
        bus.set_rssi(&dev, -50);
        let start = Instant::now();
        loop {
            bus.set_manufacturer_data(&dev, 0x22B5, &id(n).0);
            if let Some(r) = h.recv(Duration::from_millis(300)) {
                if r.peer == PeerId::Bluezone(id(n)) {
                    return dev;
                }
            }
            bus.set_manufacturer_data(&dev, 0x22B5, &[0; 12]);
            assert!(
                start.elapsed() < limit,
                "receptions did not resume:\n{}",
                logs()
            );
        }
    };
    hear(&bus, &mut h, "AA:00:00:00:01:01", 1);

    // bluetoothd restarts (the bus stays).
    bus.kill_mock();
    std::thread::sleep(Duration::from_millis(300));
    bus.start_mock();
    bus.add_adapter("hci0", 2, 2);
    hear(&bus, &mut h, "AA:00:00:00:01:02", 2);
    assert!(
        logs().contains("bluetoothd left the D-Bus system bus"),
        "{}",
        logs()
    );

    // The bus itself goes away and comes back (same address).
    bus.kill_all();
    std::thread::sleep(Duration::from_millis(500));
    assert!(h.running(), "the radio survives losing the bus");
    let mut bus = Bus::start();
    bus.start_mock();
    let adapter = bus.add_adapter("hci0", 2, 2);
    let t = Instant::now();
    let d3 = hear(&bus, &mut h, "AA:00:00:00:01:03", 3);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "recovery took {:?}",
        t.elapsed()
    );
    assert!(
        logs().contains("lost the connection to the D-Bus system bus"),
        "{}",
        logs()
    );

    // The adapter is powered off, then on again.
    let starts = bus.calls(&adapter, "StartDiscovery");
    bus.set(&adapter, ADAPTER_IFACE, "Powered", false);
    wait_for("the power-off to be noticed", limit, || {
        logs()
            .contains("Bluetooth adapter hci0 is powered off")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        bus.calls(&adapter, "StartDiscovery"),
        starts,
        "no discovery while powered off"
    );
    bus.set(&adapter, ADAPTER_IFACE, "Powered", true);
    wait_for("discovery to restart", limit, || {
        (bus.calls(&adapter, "StartDiscovery") > starts).then_some(())
    });
    h.drain();
    bus.set_rssi(&d3, -51);
    let (r, _) = h.recv_peer(PeerId::Bluezone(id(3)), limit);
    assert_eq!(r.rssi, -51);

    // The adapter is removed, then comes back.
    bus.call::<_, ()>(
        "org.bluez",
        "/",
        BLUEZ_MOCK_IFACE,
        "RemoveAdapter",
        ("hci0",),
    );
    wait_for("the removal to be noticed", limit, || {
        logs()
            .contains("Bluetooth adapter hci0 was removed")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    bus.add_adapter("hci0", 2, 2);
    hear(&bus, &mut h, "AA:00:00:00:01:04", 4);

    assert!(h.running());
    h.stop();
}

// ---------------------------------------------------------------------------------------------
// (e) the discovery watchdog

#[test]
fn a_discovery_stall_restarts_discovery() {
    let _serial = setup!();
    let mut bus = Bus::start();
    bus.start_mock();
    let adapter = bus.add_adapter("hci0", 2, 2);
    let cfg = BluezConfig {
        discovery_stall_timeout: Duration::from_secs(1),
        ..test_config()
    };
    let mut h = Harness::start(cfg, Broadcast::default());
    wait_for("StartDiscovery", Duration::from_secs(10), || {
        (bus.calls(&adapter, "StartDiscovery") >= 1).then_some(())
    });
    let dev = bus.add_device("hci0", "AA:00:00:00:02:01");
    bus.set_manufacturer_data(&dev, 0x22B5, &id(9).0);

    // Adverts keep arriving (every 250 ms for 2.5 s, stall timeout 1 s): no restart.
    let start = Instant::now();
    let mut rssi = -40;
    while start.elapsed() < Duration::from_millis(2500) {
        rssi = if rssi == -40 { -41 } else { -40 };
        bus.set_rssi(&dev, rssi);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!h.drain().is_empty(), "the adverts were heard");
    assert_eq!(
        bus.calls(&adapter, "StartDiscovery"),
        1,
        "no restart while adverts arrive"
    );

    // Silence: discovery is stopped and started again.
    let silent = Instant::now();
    wait_for("a second StartDiscovery", Duration::from_secs(5), || {
        (bus.calls(&adapter, "StartDiscovery") >= 2).then_some(())
    });
    assert!(
        silent.elapsed() >= Duration::from_millis(700),
        "not before the timeout"
    );
    assert!(bus.calls(&adapter, "StopDiscovery") >= 1);
    assert!(logs().contains("restarting discovery"), "{}", logs());

    // And adverts are heard again afterwards.
    bus.set_rssi(&dev, -42);
    let (r, _) = h.recv_peer(PeerId::Bluezone(id(9)), Duration::from_secs(5));
    assert_eq!(r.rssi, -42);
    h.stop();
}

// ---------------------------------------------------------------------------------------------
// (f) nothing to talk to

#[test]
fn no_bus_or_bluetoothd_or_adapter_is_unavailable_within_10_s() {
    let _serial = setup!();
    let rt = runtime();
    let connect = |cfg: BluezConfig| {
        let t = Instant::now();
        let r = rt.block_on(BluezRadio::connect(cfg, std::sync::Arc::new(FixedClock)));
        let elapsed = t.elapsed();
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        match r {
            Err(RadioError::Unavailable(msg)) => msg,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    };

    // No bus at all.
    let _ = std::fs::remove_file(socket_dir().join("bus"));
    let msg = connect(test_config());
    assert!(msg.contains("D-Bus system bus"), "{msg}");
    assert!(msg.contains(&bus_address()), "names the address: {msg}");

    // A bus, but no bluetoothd on it.
    let mut bus = Bus::start();
    let msg = connect(test_config());
    assert!(msg.contains("bluetoothd is not running"), "{msg}");

    // bluetoothd, but no adapter; then not the configured one.
    bus.start_mock();
    let msg = connect(test_config());
    assert!(msg.contains("no Bluetooth adapter hci0"), "{msg}");
    bus.add_adapter("hci1", 2, 2);
    let msg = connect(test_config());
    assert!(
        msg.contains("no Bluetooth adapter hci0 (bluetoothd reports: hci1)"),
        "{msg}"
    );
    let ok = rt.block_on(BluezRadio::connect(
        BluezConfig {
            adapter: None,
            ..test_config()
        },
        std::sync::Arc::new(FixedClock),
    ));
    assert_eq!(
        ok.expect("the only adapter is the default").adapter(),
        "hci1"
    );
}

// ---------------------------------------------------------------------------------------------
// iOS peers: connect and read, cached for the slot

fn add_ios_gatt(bus: &Bus, dev: &str, value: &RollingId) {
    let service = format!("{dev}/service0010");
    let chr = format!("{service}/char0011");
    let mut svc_props = PropMap::new();
    svc_props.insert(
        "UUID".into(),
        Variant(Box::new(UUID_IOS_SERVICE.to_string())),
    );
    svc_props.insert("Primary".into(), Variant(Box::new(true)));
    svc_props.insert(
        "Device".into(),
        Variant(Box::new(dbus::Path::from(dev.to_string()))),
    );
    let no_methods: Vec<(String, String, String, String)> = Vec::new();
    bus.call::<_, ()>(
        "org.bluez",
        "/",
        MOCK_IFACE,
        "AddObject",
        (
            service.as_str(),
            "org.bluez.GattService1",
            svc_props,
            no_methods,
        ),
    );
    let mut chr_props = PropMap::new();
    chr_props.insert("UUID".into(), Variant(Box::new(UUID_IOS_CHAR.to_string())));
    chr_props.insert(
        "Service".into(),
        Variant(Box::new(dbus::Path::from(service.clone()))),
    );
    chr_props.insert("Flags".into(), Variant(Box::new(vec!["read".to_string()])));
    let read = format!("ret = dbus.ByteArray(bytes.fromhex('{}'))", value.to_hex());
    let methods = vec![(
        "ReadValue".to_string(),
        "a{sv}".to_string(),
        "ay".to_string(),
        read,
    )];
    bus.call::<_, ()>(
        "org.bluez",
        "/",
        MOCK_IFACE,
        "AddObject",
        (
            chr.as_str(),
            "org.bluez.GattCharacteristic1",
            chr_props,
            methods,
        ),
    );
    bus.set(dev, DEVICE_IFACE, "ServicesResolved", true);
}

#[test]
fn ios_peers_are_read_over_gatt_and_cached() {
    let _serial = setup!();
    let mut bus = Bus::start();
    bus.start_mock();
    let adapter = bus.add_adapter("hci0", 2, 2);
    let mut h = Harness::start(test_config(), Broadcast::default());
    wait_for("StartDiscovery", Duration::from_secs(10), || {
        (bus.calls(&adapter, "StartDiscovery") >= 1).then_some(())
    });

    // Foreground iOS advert: the iOS service UUID, no ID on air.
    let d1 = bus.add_device("hci0", "AA:00:00:00:03:01");
    add_ios_gatt(&bus, &d1, &id(31));
    bus.set_rssi(&d1, -65);
    bus.set(
        &d1,
        DEVICE_IFACE,
        "UUIDs",
        vec![UUID_IOS_SERVICE.to_string()],
    );
    let (r, _) = h.recv_peer(PeerId::Bluezone(id(31)), Duration::from_secs(10));
    assert_eq!(r, reception(PeerId::Bluezone(id(31)), None, -65, Some(0)));
    assert_eq!(bus.calls(&d1, "Connect"), 1);
    assert_eq!(
        bus.calls(&format!("{d1}/service0010/char0011"), "ReadValue"),
        1
    );

    // Further adverts in the same slot use the cached ID: no new connection.
    bus.set_rssi(&d1, -66);
    let (r, _) = h.recv_peer(PeerId::Bluezone(id(31)), Duration::from_secs(5));
    assert_eq!(r.rssi, -66);
    assert_eq!(bus.calls(&d1, "Connect"), 1, "cached for the slot");

    // Background iOS advert: Apple's overflow area with Bluezone's bit.
    let d2 = bus.add_device("hci0", "AA:00:00:00:03:02");
    add_ios_gatt(&bus, &d2, &id(32));
    bus.set_rssi(&d2, -75);
    let mut overflow = vec![0x01, 0x08];
    overflow.extend_from_slice(&[0; 15]);
    bus.set_manufacturer_data(&d2, 0x004C, &overflow);
    let (r, _) = h.recv_peer(PeerId::Bluezone(id(32)), Duration::from_secs(10));
    assert_eq!(r, reception(PeerId::Bluezone(id(32)), None, -75, Some(0)));
    h.stop();
}
