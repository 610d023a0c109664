"""The API call log: bounded, newest first, filterable, who called."""

from quickstart.localcloud.portal.calls import ApiCall, ApiCallLog, caller_of


def call(n: int, status: int = 200, path: str = "/subscriptions/s/resourceGroups/rg") -> ApiCall:
    return ApiCall(n, "azure-mgmt-resource/13.0.0 :5000", "", "GET", path, status, 0.001, "")


def test_it_keeps_only_the_newest_calls():
    log = ApiCallLog(capacity=3)
    for n in range(5):
        log.add(call(n))
    shown, matched = log.select()
    assert [c.time for c in shown] == [4, 3, 2] and matched == 3


def test_filters_by_text_and_status_class():
    log = ApiCallLog()
    log.add(call(1, 200, "/subscriptions/s/resourceGroups/rg/jobs/a"))
    log.add(call(2, 404, "/subscriptions/s/resourceGroups/rg/jobs/b"))
    log.add(call(3, 409, "/subscriptions/s/resourceGroups/other"))
    assert [c.time for c in log.select(status="4")[0]] == [3, 2]
    assert [c.time for c in log.select(text="JOBS/", status="40")[0]] == [2]
    assert log.select(text="azure-mgmt-resource")[1] == 3  # the caller matches too
    assert call(1).operation == "GET /subscriptions/…/resourceGroups/rg"


def test_the_caller_is_the_sdk_product_and_the_client_port():
    agent = (
        "python/3.11.7 (Linux) msrest/0.7.1 msrest_azure/0.6.4 "
        "azure-mgmt-batchai/2.0.0 Azure-SDK-For-Python"
    )
    assert caller_of(agent, "41234") == "azure-mgmt-batchai/2.0.0 :41234"
    assert caller_of("Azure-Storage/2.1.0-2.1.0 (Python CPython 3.11.7; Linux)", "") == (
        "Azure-Storage/2.1.0-2.1.0"
    )
    assert caller_of("curl/8.0", "1") == "curl/8.0 :1"
    assert caller_of("", "") == "unknown client"
