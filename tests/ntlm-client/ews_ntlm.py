"""Logs on to an EWS endpoint with requests_ntlm (pyspnego's NTLMv2) and
sends one GetFolder: the EWS emulator's NTLM checked by a client nobody on
this project wrote.

Usage: ews_ntlm.py URL USERNAME PASSWORD
Prints the HTTP status of the GetFolder, then of a second request on the same
session (the authenticated connection), one per line.
"""

import sys

import requests
from requests_ntlm import HttpNtlmAuth

BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"'
    ' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
    '<soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header>'
    "<soap:Body><m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>"
    '</m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="calendar"/>'
    "</m:FolderIds></m:GetFolder></soap:Body></soap:Envelope>"
)


def main():
    url, username, password = sys.argv[1:4]
    session = requests.Session()
    session.auth = HttpNtlmAuth(username, password)
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    first = session.post(url, data=BODY, headers=headers, timeout=30)
    print(first.status_code)
    if first.status_code == 200:
        if "NoError" not in first.text:
            print("GetFolder answered without NoError:", first.text[:300], file=sys.stderr)
            return 1
        second = session.post(url, data=BODY, headers=headers, timeout=30)
        print(second.status_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
