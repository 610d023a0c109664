"""Package metadata for the Azure Batch AI CNTK quickstart and its local cloud."""

from setuptools import find_packages, setup

setup(
    name="batchai-cntk-quickstart",
    version="0.1.0",
    description="The Azure Batch AI CNTK quickstart, runnable today against a local cloud",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={
        "quickstart.convnet_pytorch": ["conv1_pool.c"],  # compiled by the job
        "quickstart.localcloud.portal": ["templates/*.html", "static/*"],
    },
    install_requires=[
        "azure-mgmt-batchai==2.0.0",
        "azure-mgmt-resource==13.0.0",
        "azure-storage-file==2.1.0",
        "azure-storage-common==2.1.0",
        "azure-common==1.1.28",
        "msrestazure==0.6.4.post1",
        "msrest==0.7.1",
        "adal==1.2.7",
        "requests==2.34.2",
        "werkzeug==3.1.9",
        "Jinja2==3.1.6",
        "MarkupSafe==3.0.4",
        "cryptography==50.0.2",
        "PyJWT==2.15.1",
        "tqdm==4.70.1",
        "numpy==2.4.6",
        "torch==2.13.0",
    ],
    entry_points={"console_scripts": ["quickstart=quickstart.__main__:main"]},
)
