'''python-dbusmock template: bluez5 plus the LE parts bluezoned uses.

The stock `bluez5` template has adapters and devices but no `org.bluez.LEAdvertisingManager1` and no
`org.bluez.GattManager1`. This template loads `bluez5` unchanged and adds the Mock method
`AddLEAdapter(name, alias, max_adverts, reported_instances)`, which creates an adapter (the template's
own `AddAdapter`) and adds both managers to it with `AddProperties`/`AddMethods`.

Like bluetoothd, and unlike a plain dbusmock method:

- `RegisterAdvertisement(o, a{sv})` reads the caller's `org.bluez.LEAdvertisement1` properties back
  over D-Bus (`Properties.GetAll` on the caller's object) before it replies; it fails with
  `org.bluez.Error.NotPermitted: Maximum advertisements reached` when `max_adverts` are registered
  (`SupportedInstances` reports `reported_instances`, which a test may set higher than the real
  limit, as some controllers do), and with `InvalidLength` when the legacy advertising data would
  not fit in 31 bytes;
- `RegisterApplication(o, a{sv})` reads the application with `ObjectManager.GetManagedObjects` and
  checks services and characteristics the way bluetoothd parses them;
- registrations of a client that leaves the bus are dropped.

Both need the caller's bus name, which dbusmock's dynamic methods do not see, so the handlers that
`AddMethods` created are swapped for dbus-python methods with `sender_keyword` and
`async_callbacks` (calls still go to the object's call log, so `GetCalls`/`GetMethodCalls` work).

Introspection lists child nodes after all interfaces, as bluetoothd does.

Extra Mock methods on `/` for the tests: `GetAdvertisements(adapter)`,
`GetAdvertisementRegistrations(adapter)`, `GetAdvertisementsRefusedFull(adapter)`,
`GetGattCharacteristics(adapter)`.
'''

import time
from xml.etree import ElementTree

import dbus
import dbus.service

from dbusmock import mockobject
from dbusmock.templates import bluez5
# Re-export the bluez5 template's D-Bus methods so that AddTemplate installs them as usual.
from dbusmock.templates.bluez5 import *  # noqa: F401,F403 pylint: disable=wildcard-import,unused-wildcard-import

BUS_NAME = bluez5.BUS_NAME
MAIN_OBJ = bluez5.MAIN_OBJ
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = 'org.bluez.Mock'
ADV_MANAGER_IFACE = 'org.bluez.LEAdvertisingManager1'
ADV_IFACE = 'org.bluez.LEAdvertisement1'
GATT_MANAGER_IFACE = 'org.bluez.GattManager1'
GATT_SERVICE_IFACE = 'org.bluez.GattService1'
GATT_CHRC_IFACE = 'org.bluez.GattCharacteristic1'

BASE_UUID_TAIL = '-0000-1000-8000-00805f9b34fb'


def load(mock, parameters):
    bluez5.load(mock, parameters)


_dbusmock_introspect = mockobject.DBusMockObject.Introspect


@dbus.service.method(dbus.INTROSPECTABLE_IFACE, in_signature='', out_signature='s',
                     path_keyword='object_path', connection_keyword='connection')
def _introspect(self, object_path, connection):
    '''dbusmock appends property-only interfaces after the child nodes; bluetoothd (gdbus) lists
    all interfaces first and the children last, and clients' XML parsers (bluez-async's, used by
    btleplug to find GATT services) rely on that order.'''
    tree = ElementTree.fromstring(_dbusmock_introspect(self, object_path, connection))
    for node in [child for child in tree if child.tag == 'node']:
        tree.remove(node)
        tree.append(node)
    return ElementTree.tostring(tree, encoding='unicode')


mockobject.DBusMockObject.Introspect = _introspect


def _log_call(obj, name, args):
    '''What dbusmock's own methods do: log file, call log (GetCalls), MethodCalled signal.'''
    obj.log(name + ' ' + ' '.join(repr(a) for a in args))
    obj.call_log.append((int(time.time()), name, list(args)))
    obj.MethodCalled(name, list(args))


def _install(obj, iface, name, fn):
    '''Swap the handler AddMethods created for `fn` (keeps signatures and introspection).'''
    in_sig, out_sig, code, _ = obj.methods[iface][name]
    fn.__name__ = str(name)  # what introspection shows
    obj.methods[iface][name] = (in_sig, out_sig, code, fn)


def _err(name, msg):
    return dbus.exceptions.DBusException(msg, name='org.bluez.Error.' + name)


def _uuid_len(uuid):
    u = str(uuid).lower()
    if u.endswith(BASE_UUID_TAIL) and u.startswith('0000'):
        return 2
    if u.endswith(BASE_UUID_TAIL):
        return 4
    return 16


def _legacy_len(ad):
    '''Bytes of legacy advertising data bluetoothd would build (flags included).'''
    n = 3  # flags
    if ad['uuids']:
        sizes = {}
        for u in ad['uuids']:
            sizes.setdefault(_uuid_len(u), 0)
            sizes[_uuid_len(u)] += 1
        n += sum(2 + size * count for size, count in sizes.items())
    n += sum(4 + len(v) for v in ad['manufacturer'].values())
    n += sum(2 + _uuid_len(u) + len(v) for u, v in ad['service_data'].items())
    if ad['name']:
        n += 2 + len(ad['name'])
    return n


def _forget_sender(adapter, sender):
    st = adapter.le
    for key in [k for k in st['adverts'] if k[0] == sender]:
        del st['adverts'][key]
    for key in [k for k in st['apps'] if k[0] == sender]:
        del st['apps'][key]
    _update_instances(adapter)


def _watch_sender(adapter, sender):
    st = adapter.le
    if sender in st['watched']:
        return
    st['watched'].add(sender)

    def owner_changed(new_owner):
        if not new_owner:
            st['watched'].discard(sender)
            _forget_sender(adapter, sender)
    st['watches'].append(adapter.connection.watch_name_owner(sender, owner_changed))


def _update_instances(adapter):
    st = adapter.le
    active = len(st['adverts'])
    props = adapter.props[ADV_MANAGER_IFACE]
    props['ActiveInstances'] = dbus.Byte(active, variant_level=1)
    props['SupportedInstances'] = dbus.Byte(max(st['reported'] - active, 0), variant_level=1)


def _handlers():
    '''The four manager methods (defined here, not at module level, so that AddTemplate does not
    also install them on the root object).'''

    @dbus.service.method(ADV_MANAGER_IFACE, in_signature='oa{sv}', out_signature='',
                         sender_keyword='sender', async_callbacks=('ok', 'err'))
    def _register_advertisement(adapter, path, options, sender=None, ok=None, err=None):
        _log_call(adapter, 'RegisterAdvertisement', [path, options])
        st = adapter.le
        key = (str(sender), str(path))
        if key in st['adverts'] or key in st['pending']:
            err(_err('AlreadyExists', 'Already Exists'))
            return
        if len(st['adverts']) + len(st['pending']) >= st['max']:
            st['refused_full'] += 1
            err(_err('NotPermitted', 'Maximum advertisements reached'))
            return
        st['pending'].add(key)

        def got(props):
            st['pending'].discard(key)
            ad_type = str(props.get('Type', ''))
            if ad_type not in ('broadcast', 'peripheral'):
                err(_err('InvalidArguments', 'Failed to parse advertisement.'))
                return
            ad = {
                'type': ad_type,
                'uuids': [str(u).lower() for u in props.get('ServiceUUIDs', [])],
                'manufacturer': {int(k): bytes(bytearray(v)) for k, v in props.get('ManufacturerData', {}).items()},
                'service_data': {str(k).lower(): bytes(bytearray(v)) for k, v in props.get('ServiceData', {}).items()},
                'name': str(props.get('LocalName', '')),
                'includes': [str(i) for i in props.get('Includes', [])],
                'tx_power': [int(props['TxPower'])] if 'TxPower' in props else [],
            }
            if _legacy_len(ad) > 31:
                err(_err('InvalidLength', 'Advertising data too long.'))
                return
            st['adverts'][key] = ad
            st['history'].append(key)
            _update_instances(adapter)
            _watch_sender(adapter, str(sender))
            adapter.log(f'advertisement {path} of {sender} registered: {ad!r}')
            ok()

        def failed(e):
            st['pending'].discard(key)
            err(_err('Failed', f'Failed to read advertisement properties: {e}'))

        adapter.connection.call_async(str(sender), str(path), dbus.PROPERTIES_IFACE, 'GetAll', 's',
                                      (ADV_IFACE,), got, failed)


    @dbus.service.method(ADV_MANAGER_IFACE, in_signature='o', out_signature='', sender_keyword='sender')
    def _unregister_advertisement(adapter, path, sender=None):
        _log_call(adapter, 'UnregisterAdvertisement', [path])
        key = (str(sender), str(path))
        if key not in adapter.le['adverts']:
            raise _err('DoesNotExist', 'Does Not Exist')
        del adapter.le['adverts'][key]
        _update_instances(adapter)


    @dbus.service.method(GATT_MANAGER_IFACE, in_signature='oa{sv}', out_signature='',
                         sender_keyword='sender', async_callbacks=('ok', 'err'))
    def _register_application(adapter, path, options, sender=None, ok=None, err=None):
        _log_call(adapter, 'RegisterApplication', [path, options])
        key = (str(sender), str(path))
        if key in adapter.le['apps']:
            err(_err('AlreadyExists', 'Already Exists'))
            return

        def got(objects):
            services = {str(p): i[GATT_SERVICE_IFACE] for p, i in objects.items() if GATT_SERVICE_IFACE in i}
            chrcs = {str(p): i[GATT_CHRC_IFACE] for p, i in objects.items() if GATT_CHRC_IFACE in i}
            if not services:
                err(_err('Failed', 'No object received'))
                return
            for svc in services.values():
                if 'UUID' not in svc or 'Primary' not in svc:
                    err(_err('Failed', 'Failed to create entry in database'))
                    return
            for chrc in chrcs.values():
                if 'UUID' not in chrc or not chrc.get('Flags') or str(chrc.get('Service')) not in services:
                    err(_err('Failed', 'Failed to create entry in database'))
                    return
            adapter.le['apps'][key] = {
                'services': {p: str(s['UUID']).lower() for p, s in services.items()},
                'chrcs': {p: (str(c['UUID']).lower(), str(c['Service']), [str(f) for f in c['Flags']])
                          for p, c in chrcs.items()},
            }
            _watch_sender(adapter, str(sender))
            adapter.log(f'application {path} of {sender} registered: {adapter.le["apps"][key]!r}')
            ok()

        def failed(e):
            err(_err('Failed', f'GetManagedObjects failed: {e}'))

        adapter.connection.call_async(str(sender), str(path), 'org.freedesktop.DBus.ObjectManager',
                                      'GetManagedObjects', '', (), got, failed)


    @dbus.service.method(GATT_MANAGER_IFACE, in_signature='o', out_signature='', sender_keyword='sender')
    def _unregister_application(adapter, path, sender=None):
        _log_call(adapter, 'UnregisterApplication', [path])
        key = (str(sender), str(path))
        if key not in adapter.le['apps']:
            raise _err('DoesNotExist', 'Does Not Exist')
        del adapter.le['apps'][key]

    return {
        (ADV_MANAGER_IFACE, 'RegisterAdvertisement'): _register_advertisement,
        (ADV_MANAGER_IFACE, 'UnregisterAdvertisement'): _unregister_advertisement,
        (GATT_MANAGER_IFACE, 'RegisterApplication'): _register_application,
        (GATT_MANAGER_IFACE, 'UnregisterApplication'): _unregister_application,
    }


@dbus.service.method(MOCK_IFACE, in_signature='ssyy', out_signature='s')
def AddLEAdapter(self, device_name, system_name, max_adverts, reported_instances):
    '''bluez5's AddAdapter plus LEAdvertisingManager1 and GattManager1.

    max_adverts: how many advertisements registration accepts.
    reported_instances: what SupportedInstances says while none is registered.
    '''
    path = bluez5.AddAdapter(self, device_name, system_name)
    adapter = mockobject.objects[path]
    adapter.le = {
        'max': int(max_adverts), 'reported': int(reported_instances),
        'adverts': {}, 'pending': set(), 'apps': {}, 'history': [], 'refused_full': 0,
        'watched': set(), 'watches': [],
    }
    adapter.AddProperties(ADV_MANAGER_IFACE, {
        'ActiveInstances': dbus.Byte(0, variant_level=1),
        'SupportedInstances': dbus.Byte(int(reported_instances), variant_level=1),
        'SupportedIncludes': dbus.Array(['tx-power', 'appearance', 'local-name'], signature='s', variant_level=1),
        'SupportedSecondaryChannels': dbus.Array(['1M', '2M'], signature='s', variant_level=1),
    })
    adapter.AddMethods(ADV_MANAGER_IFACE, [
        ('RegisterAdvertisement', 'oa{sv}', '', ''),
        ('UnregisterAdvertisement', 'o', '', ''),
    ])
    adapter.AddMethods(GATT_MANAGER_IFACE, [
        ('RegisterApplication', 'oa{sv}', '', ''),
        ('UnregisterApplication', 'o', '', ''),
    ])
    for (iface, name), fn in _handlers().items():
        _install(adapter, iface, name, fn)
    return path


def _adapter_state(device_name):
    path = '/org/bluez/' + device_name
    if path not in mockobject.objects or not hasattr(mockobject.objects[path], 'le'):
        raise dbus.exceptions.DBusException(f'No LE adapter {device_name}', name=MOCK_IFACE + '.NoSuchAdapter')
    return mockobject.objects[path].le


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='a(sosasa{qay}a{say}sasan)')
def GetAdvertisements(_self, device_name):
    '''Registered advertisements as read back from their owners:
    (owner, path, Type, ServiceUUIDs, ManufacturerData, ServiceData, LocalName, Includes, TxPower),
    TxPower as an empty array when the advertisement has none.'''
    out = []
    for (sender, path), ad in _adapter_state(device_name)['adverts'].items():
        out.append((
            sender, dbus.ObjectPath(path), ad['type'], dbus.Array(ad['uuids'], signature='s'),
            dbus.Dictionary({dbus.UInt16(k): dbus.ByteArray(v) for k, v in ad['manufacturer'].items()}, signature='qay'),
            dbus.Dictionary({k: dbus.ByteArray(v) for k, v in ad['service_data'].items()}, signature='say'),
            ad['name'], dbus.Array(ad['includes'], signature='s'),
            dbus.Array([dbus.Int16(t) for t in ad['tx_power']], signature='n'),
        ))
    return dbus.Array(out, signature='(sosasa{qay}a{say}sasan)')


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='u')
def GetAdvertisementRegistrations(_self, device_name):
    '''How many advertisements were ever registered on the adapter.'''
    return dbus.UInt32(len(_adapter_state(device_name)['history']))


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='u')
def GetAdvertisementsRefusedFull(_self, device_name):
    '''How many registrations were refused with "Maximum advertisements reached".'''
    return dbus.UInt32(_adapter_state(device_name)['refused_full'])


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='a(soosas)')
def GetGattCharacteristics(_self, device_name):
    '''Characteristics of registered applications: (owner, app path, characteristic path,
    characteristic UUID, flags); the service's UUID is checked by the test through GetManagedObjects.'''
    out = []
    for (sender, app), reg in _adapter_state(device_name)['apps'].items():
        for path, (uuid, _service, flags) in reg['chrcs'].items():
            out.append((sender, dbus.ObjectPath(app), dbus.ObjectPath(path), uuid,
                        dbus.Array(flags, signature='s')))
    return dbus.Array(out, signature='(soosas)')
